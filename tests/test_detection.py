"""The detector: smoothing, threshold, event spans, refractory merge, ignored classes."""

import numpy as np
import pytest

from models.detection import Detector, DetectorConfig

LABELS = ["_silence_", "_unknown_", "yes", "no"]


def posterior(label: str, p: float = 0.95) -> np.ndarray:
    out = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1))
    out[LABELS.index(label)] = p
    return out


def run(timeline: list[tuple[float, str]], **settings) -> list[dict]:
    """``timeline``: (window end in seconds, the label the window 'hears')."""
    detector = Detector(LABELS, window_s=1.0, config=DetectorConfig(**settings))
    events = []
    for t_end, label in timeline:
        events += detector.push(t_end, posterior(label))
    events += detector.flush()
    return [e.to_dict() for e in events]


def ticks(start: float, stop: float, label: str, hop: float = 0.1) -> list[tuple[float, str]]:
    n = int(round((stop - start) / hop))
    return [(round(start + i * hop, 3), label) for i in range(n)]


def test_two_commands_give_two_events_with_the_overlap_of_their_windows():
    timeline = (
        ticks(1.0, 2.0, "_silence_")
        + ticks(2.0, 2.5, "yes")  # windows ending 2.0-2.4 hear "yes"
        + ticks(2.5, 5.0, "_silence_")
        + ticks(5.0, 5.3, "no")
        + ticks(5.3, 7.0, "_silence_")
    )
    events = run(timeline, average_ms=0)
    assert [(e["label"], e["start"], e["end"]) for e in events] == [
        ("yes", 1.4, 2.0),  # inside every window that heard it: [2.4 - 1, 2.0]
        ("no", 4.2, 5.0),
    ]
    assert all(e["score"] == pytest.approx(0.95) for e in events)


def test_silence_and_unknown_are_never_reported_and_threshold_applies():
    timeline = ticks(1.0, 3.0, "_unknown_") + ticks(3.0, 4.0, "_silence_")
    assert run(timeline, average_ms=0) == []
    weak = [(t, "yes") for t, _ in ticks(1.0, 2.0, "yes")]
    detector = Detector(LABELS, 1.0, DetectorConfig(threshold=0.7, average_ms=0))
    for t, _ in weak:
        assert detector.push(t, posterior("yes", 0.6)) == []
    assert detector.flush() == []


def test_a_flicker_within_the_refractory_period_is_one_event():
    timeline = (
        ticks(1.0, 1.3, "yes")
        + [(1.3, "_silence_")]
        + ticks(1.4, 1.7, "yes")
        + ticks(1.7, 4.0, "_silence_")
    )
    merged = run(timeline, average_ms=0, suppression_ms=500)
    assert [e["label"] for e in merged] == ["yes"]
    # one event of all its windows: inside every one (the last's start 0.6, the first's end 1.0)
    assert merged[0]["start"] == pytest.approx(0.6) and merged[0]["end"] == pytest.approx(1.0)
    separate = run(timeline, average_ms=0, suppression_ms=0)
    assert [e["label"] for e in separate] == ["yes", "yes"]


def events_of(timeline: list[tuple[float, str]], **settings) -> list:
    """``run``'s events as ``Event`` objects, each released as the detector handed it out."""
    detector = Detector(LABELS, window_s=1.0, config=DetectorConfig(**settings))
    out = []
    for t_end, label in timeline:
        out += [(t_end, e) for e in detector.push(t_end, posterior(label))]
    return out + [(None, e) for e in detector.flush()]


def test_two_words_of_one_label_less_than_a_window_apart_are_two_events():
    # "yes" at 1.0-1.4 s and again at 2.4-2.8 s, 1-s windows: every window ending 1.4-3.4 s
    # hears one of them, so the score never falls; a window starting after the first
    # detection (1.4) and the refractory period (0.5 s: a word goes on at most that long after
    # it is first detected) cannot hear the first word, so it begins the second event
    timeline = ticks(0.5, 1.4, "_silence_") + ticks(1.4, 3.5, "yes") + ticks(3.5, 5.0, "_silence_")
    released = events_of(timeline, average_ms=0, suppression_ms=500)
    assert [e.label for _, e in released] == ["yes", "yes"]
    (when, first), (_, second) = released
    assert when == pytest.approx(2.9)  # handed out at the split, not held back
    assert second.detected == pytest.approx(2.9)  # 1.4 + 1.0 + 0.5
    assert (first.start, first.end) == pytest.approx((1.2, 1.4))  # ends at its detection
    assert (second.start, second.end) == pytest.approx((2.4, 2.6))  # from its last start
    # the split moves with the refractory period and the averaging, as the geometry says
    sooner = events_of(timeline, average_ms=0, suppression_ms=0)
    # (without one, every window's length of unbroken detections is another word)
    assert [e.detected for _, e in sooner] == pytest.approx([1.4, 2.4, 3.4])
    later = events_of(timeline, average_ms=300, suppression_ms=500)
    assert [e.detected for _, e in later] == pytest.approx([1.6, 3.4])  # 1.6 + 1.0 + 0.3 + 0.5
    # one word that lights up less than a window, the averaging and the refractory period
    single = ticks(0.5, 1.4, "_silence_") + ticks(1.4, 3.0, "yes") + ticks(3.0, 4.0, "_silence_")
    assert [e["label"] for e in run(single, average_ms=300)] == ["yes"]
    # a dip just at the split: the first word keeps its own span, the second starts after it
    dipped = [(t, "_silence_" if t == pytest.approx(2.9) else label) for t, label in timeline]
    released = events_of(dipped, average_ms=0, suppression_ms=500)
    assert [e.label for _, e in released] == ["yes", "yes"]
    (_, first), (_, second) = released
    assert (first.start, first.end) == pytest.approx((1.2, 1.4))
    assert second.detected == pytest.approx(3.0) and second.start >= first.end


def test_smoothing_removes_a_single_noisy_window():
    timeline = ticks(1.0, 2.0, "_silence_") + [(2.0, "yes")] + ticks(2.1, 4.0, "_silence_")
    assert run(timeline, average_ms=0) != []
    assert run(timeline, average_ms=500) == []  # one window in five: mean 0.22 < 0.7


def test_events_are_released_while_the_stream_goes_on():
    detector = Detector(LABELS, 1.0, DetectorConfig(average_ms=0, suppression_ms=500))
    released = []
    for t, label in ticks(1.0, 1.3, "yes") + ticks(1.3, 4.0, "_silence_"):
        released += detector.push(t, posterior(label))
    assert [e.label for e in released] == ["yes"]  # before flush: usable live
    assert detector.flush() == []


def test_bad_settings_name_the_setting():
    from pipelines.config import ConfigError

    with pytest.raises(ConfigError, match="threshold"):
        DetectorConfig(threshold=1.5)
    with pytest.raises(ConfigError, match="hop_ms"):
        DetectorConfig(hop_ms=0)
    with pytest.raises(ConfigError, match="stream_overlap"):
        DetectorConfig(stream_overlap=1)
    with pytest.raises(ConfigError, match=r"stream_overlap: expected 2..16. Received: 1000000"):
        DetectorConfig(stream_overlap=1_000_000)  # a server query could ask for any amount of work
    with pytest.raises(ConfigError, match=r"hop_ms: expected >= 10. Received: 0.01"):
        DetectorConfig(hop_ms=0.01)
    with pytest.raises(ConfigError, match="stream_threshold"):
        DetectorConfig(stream_threshold=0)
    for name in ("hop_ms", "average_ms", "suppression_ms", "stream_average_ms", "listen_ms"):
        with pytest.raises(ConfigError, match=f"{name}.*finite.*inf"):
            DetectorConfig(**{name: float("inf")})
    for name in ("average_ms", "stream_average_ms"):  # every answer averages that span
        with pytest.raises(
            ConfigError, match=rf"{name}: expected in \[0, 5000\] ms.*Received: 1000000000"
        ):
            DetectorConfig(**{name: 1e9})
        with pytest.raises(ConfigError, match=rf"{name}: expected in \[0, 5000\] ms.*-1"):
            DetectorConfig(**{name: -1})
        DetectorConfig(**{name: 5000})
    with pytest.raises(ConfigError, match=r"hop_ms.*window \(1000 ms\).*1500"):
        Detector(LABELS, 1.0, DetectorConfig(hop_ms=1500))  # would skip half a second in two
    Detector(LABELS, 1.0, DetectorConfig(hop_ms=1000))  # windows end to end: allowed


def test_stream_settings_apply_to_stream_only_and_a_given_value_to_both():
    config = DetectorConfig(threshold=0.8, stream_threshold=0.9, stream_average_ms=750)
    assert config.for_stream() == DetectorConfig(threshold=0.9, average_ms=750)
    assert DetectorConfig(threshold=0.6).for_stream() == DetectorConfig(threshold=0.6)
    given = config.with_overrides(threshold=0.5, hop_ms=None)  # e.g. --threshold 0.5
    assert given.threshold == 0.5 and given.for_stream().threshold == 0.5
    assert given.for_stream().average_ms == 750  # not given: the stream's own
    assert config.hop_samples(16000) == 1600 and DetectorConfig(hop_ms=10).hop_samples(8000) == 80


def test_a_word_heard_only_by_the_last_windows_is_found_at_the_end():
    # "yes" in the last 0.2 s: only the last two windows hear it, and averaged with the three
    # before them their mean (0.41) stays under the threshold; the start of a stream is scored
    # from its first windows alone, so the end is scored from its last windows alone too
    timeline = ticks(1.0, 1.3, "_silence_") + ticks(1.3, 1.5, "yes")
    events = run(timeline, average_ms=500, threshold=0.7)
    # inside the last window: its first detection is the recording's last answer
    assert [(e["label"], e["start"], e["end"]) for e in events] == [("yes", 0.4, 1.4)]
    # the same word at the start is found from the first windows alone
    start = ticks(1.0, 1.2, "yes") + ticks(1.2, 1.5, "_silence_")
    assert [e["label"] for e in run(start, average_ms=500, threshold=0.7)] == ["yes"]
    # and the silence that ends a recording gives no event when re-scored alone
    assert run(ticks(1.0, 3.0, "_silence_"), average_ms=500) == []
