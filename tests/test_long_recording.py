"""The long test recording: clips laid end to end in noise, with their true times."""

import numpy as np

from data.long_recording import build_recording
from models.detection import Event, score_events
from tests.conftest import tone


def test_clips_are_where_the_recording_says():
    rng = np.random.default_rng(0)
    clips = [(tone(300, 0.5), "yes"), (tone(900, 0.3), "_unknown_"), (tone(600, 0.4), "no")]
    audio, placed = build_recording(clips, 16000, [], rng, gap_seconds=(0.5, 1.0))
    assert [p.label for p in placed] == ["yes", "_unknown_", "no"]
    for (y, _), p in zip(clips, placed, strict=True):
        segment = audio[int(round(p.start * 16000)) : int(round(p.end * 16000))]
        assert segment.size == y.size
        assert np.corrcoef(segment, y)[0, 1] > 0.99  # the clip, over faint noise
    assert placed[-1].end < audio.size / 16000  # a pause after the last clip too
    quiet = audio[: int(placed[0].start * 16000)]
    assert 20 * np.log10(np.sqrt(np.mean(quiet**2))) < -39  # -55 to -40 dBFS noise


def test_score_events_counts_found_wrong_false_and_delay():
    rng = np.random.default_rng(0)
    clips = [(tone(300, 0.5), "yes"), (tone(900, 0.3), "_unknown_"), (tone(600, 0.4), "no")]
    _, placed = build_recording(clips, 16000, [], rng)
    yes, unknown, no = placed
    events = [
        Event("yes", yes.start, yes.end, 0.9, detected=yes.end + 0.2),  # found, 0.2 s late
        Event("yes", unknown.start, unknown.end, 0.8, detected=unknown.end),  # on a non-command
        Event("yes", no.start, no.end, 0.8, detected=no.end),  # wrong label
        Event("no", no.end + 5, no.end + 5.2, 0.9, detected=no.end + 5.3),  # in a pause
    ]
    scores = score_events(events, placed, ("_silence_", "_unknown_"), seconds=3600.0)
    assert scores["commands"] == 2 and scores["recall"] == 0.5
    assert scores["wrong_label_rate"] == 0.5
    assert scores["false_alarms"] == 2 and scores["false_alarms_per_hour"] == 2.0
    assert abs(scores["mean_delay_seconds"] - 0.2) < 1e-6
