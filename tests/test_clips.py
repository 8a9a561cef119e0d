"""``data.clips``: picking a few clips that cover every label."""

from collections import Counter

from data.clips import Clip, spread_by_label


def _listing() -> list[Clip]:
    # sorted like a folder listing: all of "down" first, then "go", then 3 of "up"
    counts = {"down": 150, "go": 100, "up": 3}
    return [Clip(f"{w}/{i}.wav", w, f"s{i}", "test") for w, n in counts.items() for i in range(n)]


def test_a_few_clips_take_every_label_in_turn():
    chosen = spread_by_label(_listing(), 20, seed=0)
    assert Counter(c.label for c in chosen) == {"down": 9, "go": 8, "up": 3}
    assert {c.label for c in chosen[:3]} == {"down", "go", "up"}  # the first few too
    assert len({c.path for c in chosen}) == 20  # no clip twice


def test_the_choice_is_seeded_and_never_longer_than_the_listing():
    assert spread_by_label(_listing(), 20, seed=1) == spread_by_label(_listing(), 20, seed=1)
    assert spread_by_label(_listing(), 20, seed=1) != spread_by_label(_listing(), 20, seed=2)
    assert len(spread_by_label(_listing(), 1000)) == 253
    assert spread_by_label([], 5) == []
