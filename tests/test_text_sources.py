"""Sentence-pair sources, cleaning, filters, de-duplication and splits."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from data.checks import ConfigError
from data.synthetic_text import generate_dates
from data.text import TextConfig, tokenize_many
from data.text_sources import (
    SyntheticTextConfig,
    TextDataConfig,
    list_pairs,
    prepare_pairs,
    split_of,
)
from tests.conftest import shared_path


def _counts(config: TextConfig):
    return lambda sentences, side: [len(t) for t in tokenize_many(sentences, config, side)]


def _prepare(listing, data, text=None, seed=0):
    text = text or TextConfig()
    return prepare_pairs(listing, data, text, _counts(text), seed)


def test_tsv_reads_two_and_three_columns_and_lists_bad_lines(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_bytes(
        b"Go.\tVe.\tCC-BY 2.0 (France) Attribution: tatoeba.org\n"
        b"Hi.\tHola.\n"
        b"no tab here\n"
        b"\n" + b"bad \xff bytes\tmal\n" + b"Hi.\tHola.\n" + "  \tvacío\n".encode()
    )
    listing = list_pairs(TextDataConfig(source=f"tsv:{path}"), 0)
    assert [p[:2] for p in listing.pairs] == [
        ("Go.", "Ve."),
        ("Hi.", "Hola."),
        ("Hi.", "Hola."),
        ("  ", "vacío"),
    ]
    reasons = {r["item"]: r["kind"] for r in listing.rejected}
    assert reasons == {"pairs.txt:3": "malformed line", "pairs.txt:5": "not UTF-8"}

    data = TextDataConfig(source=f"tsv:{path}", direction="reverse")
    kept, rejected = _prepare(listing, data)
    assert {(p["source"], p["target"]) for p in kept} == {("Ve.", "Go."), ("Hola.", "Hi.")}
    kinds = Counter(r["kind"] for r in rejected)
    assert kinds == {"malformed line": 1, "not UTF-8": 1, "duplicate pair": 1, "empty target": 1}


def test_missing_tsv_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        list_pairs(TextDataConfig(source=f"tsv:{tmp_path / 'nope.txt'}"), 0)


def test_length_filter_and_max_pairs_are_counted():
    listing = list_pairs(TextDataConfig(synthetic=SyntheticTextConfig(examples=300)), 0)
    text = TextConfig(max_source_tokens=4)
    data = TextDataConfig(max_pairs=50)
    kept, rejected = _prepare(listing, data, text)
    assert len(kept) == 50
    kinds = Counter()
    for r in rejected:
        kinds[r["kind"]] += r.get("count", 1)
    assert kinds["source too long"] > 0
    assert len(kept) + sum(kinds.values()) == 300


def test_split_by_source_sentence_never_leaks():
    pairs = [(f"frase {i % 40}", f"sentence {i}", str(i)) for i in range(400)]
    from data.text_sources import PairListing

    kept, _ = _prepare(PairListing(pairs), TextDataConfig(val_percent=20, test_percent=20))
    split_of_source: dict[str, set] = {}
    for p in kept:
        split_of_source.setdefault(p["source"], set()).add(p["split"])
    assert all(len(s) == 1 for s in split_of_source.values())
    assert {p["split"] for p in kept} == {"train", "validation", "test"}
    assert split_of("frase 1", 20, 20) == split_of("frase 1", 20, 20)


def test_synthetic_dates_are_deterministic_and_correct():
    pairs = generate_dates(500, seed=1)
    assert pairs == generate_dates(500, seed=1)
    assert pairs != generate_dates(500, seed=2)
    for written, iso in pairs:
        date = dt.date.fromisoformat(iso)
        assert 1950 <= date.year <= 2049
        assert str(date.day) in written  # the day is always written in some form
    styles = {"/" in w or "." in w[:6] or "-" in w for w, _ in pairs}
    assert styles == {True, False}  # numeric and worded dates both occur


def test_synthetic_two_digit_years_are_unambiguous():
    for written, iso in generate_dates(2000, seed=0, styles=("numeric",)):
        year = written.replace("-", "/").replace(".", "/").split("/")[-1]
        if len(year) == 2:
            assert iso.startswith(("19", "20")) and iso[2:4] == year
            assert (int(year) >= 50) == iso.startswith("19")


def test_bad_data_config_is_rejected():
    with pytest.raises(ConfigError, match="data.direction"):
        TextDataConfig(direction="backwards")
    with pytest.raises(ConfigError, match="data.source"):
        TextDataConfig(source="csv:file")
    with pytest.raises(ConfigError, match="data.synthetic.styles"):
        SyntheticTextConfig(styles=("klingon",))


def test_tfds_translation_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        listing = list_pairs(
            TextDataConfig(source="tfds:ted_hrlr_translate/pt_to_en", tfds_split="train"), 0
        )
    assert len(listing.pairs) == 5
    assert all(isinstance(a, str) and isinstance(b, str) for a, b, _ in listing.pairs)


def test_tatoeba_spanish_to_english():
    path = shared_path("tatoeba_spa_eng", "spa.txt")
    data = TextDataConfig(source=f"tsv:{path}", direction="reverse")
    listing = list_pairs(data, 0)
    assert len(listing.pairs) > 100_000 and not listing.rejected
    first, second, _ = listing.pairs[0]
    assert (first, second) == ("Go.", "Ve.")  # English first in the file
    kept, _ = _prepare(listing, data)
    assert kept[0]["source"] == "Ve." and kept[0]["target"] == "Go."
    assert len({p["source"] for p in kept if p["split"] == "test"}) > 1000


def test_edited_tsv_reruns_ingest(tmp_path):
    from pipelines.cli import resolve_config
    from pipelines.runner import run_pipeline

    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"sentence {i}\tfrase {i}\n" for i in range(60)), encoding="utf-8")
    pipeline, config = resolve_config(
        "translation",
        overrides=[f"data.source=tsv:{path}", "data.val_percent=20", "data.test_percent=20"],
    )
    first = run_pipeline(pipeline, config, tmp_path / "run", until="ingest")
    assert run_pipeline(pipeline, config, tmp_path / "run", until="ingest").skipped == ["ingest"]
    with path.open("a", encoding="utf-8") as handle:
        handle.write("one more\tuna más\n")
    second = run_pipeline(pipeline, config, tmp_path / "run", until="ingest")
    assert second.ran == ["ingest"]
    assert sum(second.metrics["examples"].values()) == sum(first.metrics["examples"].values()) + 1


@pytest.mark.parametrize("block", [1, 2, 3, 5, 1 << 20])
def test_lines_are_split_like_splitlines_across_read_blocks(tmp_path, block):
    from data.text_sources import _lines

    raw = b"a\tb\r\nc\td\re\tf\n\n\r\ng\th\r\r\n\xc3\xa9\tx"
    path = tmp_path / "pairs.txt"
    path.write_bytes(b"\xef\xbb\xbf" + raw)
    assert list(_lines(path, block)) == raw.splitlines()


def test_filtering_in_batches_changes_nothing():
    from data.text_sources import filter_pairs

    text = TextConfig(max_source_tokens=5)
    listing = list_pairs(TextDataConfig(synthetic=SyntheticTextConfig(examples=300)), 0)
    items = [*listing.pairs[:150], *listing.pairs[:40], *listing.pairs[150:]]  # 40 duplicates

    def run(batch):
        return list(filter_pairs(items, TextDataConfig(), text, _counts(text), batch=batch))

    whole = run(4096)
    assert run(7) == whole
    kinds = Counter(r.get("kind", "kept") for r in whole)
    origins = {origin for *_, origin in items[:40]}
    first_kept = sum("kind" not in r and r["origin"] in origins for r in whole)
    # every repeated pair that passed the length filter is a duplicate
    assert kinds["duplicate pair"] >= first_kept > 0 and kinds["source too long"] > 0
    assert sum(kinds.values()) == len(items)
