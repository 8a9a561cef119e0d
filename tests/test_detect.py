"""``run.py detect``'s reading and windowing, and detection end to end with a known model."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from models.detection import Detector, DetectorConfig, windows
from models.serving import Stream
from pipelines.detect import detect_file, read_blocks

RATE = 16000


def test_windows_cover_a_recording_read_in_blocks():
    y = np.random.default_rng(0).normal(0, 0.1, int(RATE * 10.37)).astype(np.float32)
    blocks = (y[i : i + 11_000] for i in range(0, y.size, 11_000))
    got = [(end, w.copy()) for end, w in windows(blocks, 16000, 1600)]
    ends = [end for end, _ in got]
    assert ends[0] == 16000 and ends[-1] == y.size
    assert all(b - a == 1600 for a, b in zip(ends[:-2], ends[1:-1], strict=True))
    for end, w in got:
        np.testing.assert_array_equal(w, y[end - 16000 : end])


def test_a_recording_shorter_than_the_window_is_one_window():
    y = np.ones(5000, np.float32)
    got = list(windows(iter([y[:3000], y[3000:]]), 16000, 1600))
    assert len(got) == 1 and got[0][0] == 5000 and got[0][1].size == 5000


def test_read_blocks_resamples_mixes_down_and_stays_in_blocks(tmp_path):
    seconds = 25.0
    t = np.arange(int(44100 * seconds)) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.3
    path = tmp_path / "long.flac"
    soundfile.write(path, stereo.astype(np.float32), 44100, format="FLAC")
    blocks = list(read_blocks(str(path), RATE, block_seconds=2.0))
    assert max(b.size for b in blocks) <= int(RATE * 2.05)  # never the whole file at once
    total = sum(b.size for b in blocks)
    assert abs(total - seconds * RATE) <= 2
    whole = np.concatenate(blocks)
    assert abs(np.sqrt(np.mean(whole[RATE:-RATE] ** 2)) - 0.3 / np.sqrt(2)) < 0.01


def test_read_blocks_rejects_bad_files(tmp_path):
    from data.audio import AudioError

    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio")
    for name, reason in (
        ("empty.wav", "empty file"),
        ("text.wav", "unreadable"),
        ("no.wav", "not found"),
    ):
        with pytest.raises(AudioError, match=reason):
            list(read_blocks(str(tmp_path / name), RATE))


class ToneModel:
    """A stand-in for the SavedModel: hears 'yes' in a window holding a loud 1 kHz burst and
    'no' for a 3 kHz one, silence otherwise (so the test knows the exact answer)."""

    labels = ["_silence_", "_unknown_", "yes", "no"]
    rate = RATE
    window = RATE  # 1-s windows
    detector = DetectorConfig(average_ms=300)  # the export's own settings

    def classify(self, x, lengths=None):
        return self(x)["probabilities"].numpy()

    def __call__(self, waveform):
        import tensorflow as tf

        x = np.asarray(waveform)
        spectrum = np.abs(np.fft.rfft(x, axis=1))
        freqs = np.fft.rfftfreq(x.shape[1], 1 / RATE)
        band = lambda f: spectrum[:, np.abs(freqs - f) < 50].sum(axis=1)  # noqa: E731
        total = spectrum.sum(axis=1) + 1e-9
        probs = np.zeros((x.shape[0], 4), np.float32)
        yes, no = band(1000) / total, band(3000) / total
        probs[:, 2] = np.where(yes > 0.3, 0.97, 0.01)
        probs[:, 3] = np.where(no > 0.3, 0.97, 0.01)
        probs[:, 0] = 1 - probs[:, 2] - probs[:, 3]
        return {"probabilities": tf.constant(probs)}


def test_detect_finds_every_burst_at_its_time(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(0, 0.01, RATE * 60).astype(np.float32)  # a minute of faint noise
    truth = [("yes", 3.2), ("no", 9.0), ("yes", 17.5), ("yes", 31.0), ("no", 44.4), ("no", 52.1)]
    t = np.arange(int(0.4 * RATE)) / RATE
    for label, start in truth:
        freq = 1000 if label == "yes" else 3000
        i = int(start * RATE)
        y[i : i + t.size] += 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    path = tmp_path / "recording_8k.wav"  # another rate: resampled on the way in
    import librosa

    soundfile.write(path, librosa.resample(y, orig_sr=RATE, target_sr=8000), 8000)
    events = detect_file(ToneModel(), str(path), DetectorConfig(average_ms=300))
    assert [e["label"] for e in events] == [label for label, _ in truth]
    for event, (_, start) in zip(events, truth, strict=True):
        # centred on the burst (0.4 s long) within two hops (smoothing delays it); overlapping it
        assert abs((event["start"] + event["end"]) / 2 - (start + 0.2)) <= 0.2, (event, start)
        assert event["start"] < start + 0.4 and event["end"] > start
        assert event["end"] - event["start"] <= 1.0


def test_detect_uses_the_exports_own_settings_unless_given(tmp_path):
    y = np.random.default_rng(0).normal(0, 0.01, RATE * 4).astype(np.float32)
    t = np.arange(int(0.4 * RATE)) / RATE
    y[RATE : RATE + t.size] += 0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    path = tmp_path / "one.wav"
    soundfile.write(path, y, RATE)
    assert [e["label"] for e in detect_file(ToneModel(), str(path))] == ["yes"]

    class Strict(ToneModel):
        detector = DetectorConfig(threshold=0.99)  # above the stand-in's 0.97

    assert detect_file(Strict(), str(path)) == []
    given = Strict.detector.with_overrides(threshold=0.9, average_ms=None)
    assert given == DetectorConfig(threshold=0.9)
    assert [e["label"] for e in detect_file(Strict(), str(path), given)] == ["yes"]


class HopByHopStream(Stream):
    """A stand-in streaming model with one state vector ``state`` per row: ``answer`` updates it
    from one hop of samples and returns that hop's output."""

    def __init__(self, hop: int, size: int, rows: int) -> None:
        super().__init__(hop, [{"name": "state", "shape": [None, size]}], rows)

    def answer(self, state: np.ndarray, samples: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _step(self, samples):
        hops = samples.shape[1] // self.hop
        return np.stack(
            [
                [
                    self.answer(self.state["state"][row], samples[row, k * self.hop :][: self.hop])
                    for k in range(hops)
                ]
                for row in range(self.rows)
            ]
        )


class LoudSinceResetStream(HopByHopStream):
    """Never forgets: 'yes' once any loud sample was heard since its state was last reset,
    silence before."""

    def __init__(self, rows: int) -> None:
        super().__init__(160, 1, rows)

    def answer(self, state, samples):
        state[0] = max(state[0], np.abs(samples).max())  # in place: the row's state
        return np.eye(4, dtype=np.float32)[2 if state[0] > 0.3 else 0]


class CountingStream(HopByHopStream):
    """Answers, after each hop, the hops and the sum of samples since reset."""

    def __init__(self, rows: int) -> None:
        super().__init__(10, 2, rows)

    def answer(self, state, samples):
        state += [1, samples.sum(dtype=np.float64)]
        return state.astype(np.float64)


@pytest.mark.parametrize("samples", [7, 10, 45, 50, 99, 100, 149, 150, 151, 1000, 1234, 2000])
@pytest.mark.parametrize(
    ("overlap", "seconds_per_call", "hop"),
    [(2, 0.001, 10), (2, 0.25, 10), (2, 8.0, 10), (4, 0.1, 10), (2, 0.25, 50), (4, 8.0, 30)],
)
def test_stream_posteriors_answer_every_hop_from_the_run_that_heard_most_of_a_window(
    samples, overlap, seconds_per_call, hop
):
    from pipelines.detect import stream_posteriors

    rate, window = 1000, 120  # runs of 120 samples, a new one every 120 / overlap; steps of 10
    stride = window // overlap
    y = np.arange(1, samples + 1, dtype=np.float64).astype(np.float32) / 1000
    blocks = (y[i : i + 37] for i in range(0, y.size, 37))  # blocks unrelated to the window
    scored = list(
        stream_posteriors(blocks, CountingStream, hop, rate, window, overlap, seconds_per_call)
    )
    # every whole hop answered once, in order, from the first one at which the first run has
    # heard more than (overlap - 1) / overlap of a window; a shorter recording: once, at its end
    # (its last whole step; one shorter than a step is heard zero-padded to one)
    first = ((overlap - 1) * stride // hop + 1) * hop
    ends = np.arange(first, samples + 1, hop) if samples >= first else [samples // 10 * 10 or 10]
    np.testing.assert_allclose([t for t, _ in scored], np.array(ends) / rate)
    for end, (_, (count, total)) in zip(ends, scored, strict=True):
        n = end // 10  # steps of 10 samples
        piece = (n - 1) * 10 // stride
        start = max(0, (piece - overlap + 1) * stride)  # the run that started earliest
        assert count == (end - start) / 10, (end, count)
        assert total == pytest.approx(y[start:end].sum(), rel=1e-5), end


@pytest.mark.parametrize("samples", [7, 10, 45, 99, 100, 151, 1234])
@pytest.mark.parametrize(("overlap", "hop"), [(2, 10), (4, 10), (2, 50), (3, 30)])
def test_live_runs_fed_in_pieces_answer_what_stream_posteriors_answers(samples, overlap, hop):
    """A live stream (pieces of any size, hops counted across them) gets the same answers, at
    the same times, as the whole recording."""
    from pipelines.detect import LiveRuns, stream_posteriors

    rate, window = 1000, 120
    y = np.random.default_rng(samples).uniform(-1, 1, samples).astype(np.float32)
    whole = list(stream_posteriors(iter([y]), CountingStream, hop, rate, window, overlap))
    live = LiveRuns(CountingStream(overlap), window, hop)
    cuts = np.cumsum(np.random.default_rng(overlap).integers(1, 60, samples))
    pieces = np.split(y, cuts[cuts < samples])
    answers = [answer for piece in pieces for answer in live.push(piece)] + live.end()
    assert [end / rate for end, _ in answers] == pytest.approx([t for t, _ in whole])
    np.testing.assert_allclose(
        np.array([a for _, a in answers]).reshape(-1, 2),
        np.array([p for _, p in whole]).reshape(-1, 2),
        rtol=1e-9,
    )


def test_a_hop_longer_than_the_runs_allow_is_refused_naming_it():
    from data.checks import ConfigError
    from pipelines.detect import RunSchedule, stream_posteriors

    assert RunSchedule.of(10, 120, 2, 60).first_answer == 12  # answers at 120, 180, ... samples
    with pytest.raises(ConfigError, match=r"hop_ms \(with stream\).*at most about .*60 samples"):
        RunSchedule.of(10, 120, 2, 130)  # the first answer (130) after the first run ends (120)
    with pytest.raises(
        ConfigError, match=r"a multiple of the stream's step \(10 samples.*'25 samples'"
    ):
        RunSchedule.of(10, 120, 2, 25)  # would answer every 20 or 30 samples, not 25
    y = np.zeros(1234, np.float32)
    with pytest.raises(ConfigError, match="Received: '130 samples'"):
        list(stream_posteriors(iter([y]), CountingStream, 130, 1000, 120, 2))


def test_stream_posteriors_restart_staggered_streams_so_a_word_is_forgotten():
    from pipelines.detect import stream_posteriors

    rate, window = RATE, RATE  # 1-s window: the rows restart every second, half a second apart
    y = np.random.default_rng(0).normal(0, 0.01, 6 * rate).astype(np.float32)
    y[int(2.0 * rate) : int(2.3 * rate)] = 0.5  # the only loud moment
    blocks = (y[i : i + 7000] for i in range(0, y.size, 7000))  # blocks unrelated to the window
    scored = list(stream_posteriors(blocks, LoudSinceResetStream, int(0.1 * rate), rate, window))
    times = np.array([t for t, _ in scored])
    # from the first run's answer after half a window (2 runs at a time) to the end
    np.testing.assert_allclose(times, np.arange(6, 61) * 0.1, atol=1e-9)
    assert times[-1] == pytest.approx(6.0)
    loud = times[[p.argmax() == 2 for _, p in scored]]
    # heard from the burst on, and forgotten within a window after it ends (one carried state
    # would say 'yes' to the end of the recording)
    assert loud.min() == pytest.approx(2.1) and 2.3 < loud.max() <= 2.3 + 1.0
    assert np.all(np.diff(loud) < 0.15)  # one unbroken stretch
    detector = Detector(ToneModel.labels, 1.0, DetectorConfig(average_ms=0))
    events = [e for t, p in scored for e in detector.push(t, p)] + detector.flush()
    assert [e.label for e in events] == ["yes"]


def test_a_decode_error_partway_keeps_the_events_heard_before_it(tmp_path, monkeypatch):
    import pipelines.detect as detect_module
    from data.audio import AudioError
    from pipelines.detect import iter_events

    y = np.random.default_rng(0).normal(0, 0.01, RATE * 12).astype(np.float32)
    t = np.arange(int(0.4 * RATE)) / RATE
    y[RATE * 11 : RATE * 11 + t.size] += 0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    path = tmp_path / "broken_at_12s.wav"
    soundfile.write(path, y, RATE)

    def blocks_then_failure(path, rate, block_seconds=10.0):  # noqa: ARG001
        yield y[: RATE * 10]
        yield y[RATE * 10 :]  # "yes" at 11.0-11.4 s: its event still open when decoding fails
        raise AudioError("unreadable audio (a corrupt frame)")

    monkeypatch.setattr(detect_module, "read_blocks", blocks_then_failure)
    found = iter_events(ToneModel(), str(path), DetectorConfig(average_ms=0))
    first = next(found)
    assert first["label"] == "yes" and first["start"] < 11.4 and first["end"] > 11.0
    with pytest.raises(AudioError, match="corrupt frame"):
        next(found)


def test_listen_ms_hears_the_newest_span_of_each_window_after_silence(tmp_path):
    """Words closer than a window, heard one at a time through a span shorter than it."""
    rng = np.random.default_rng(1)
    y = rng.normal(0, 0.01, RATE * 12).astype(np.float32)
    truth = [("yes", 3.0), ("no", 3.8), ("yes", 4.6), ("no", 8.0)]  # pauses of 0.6 s
    t = np.arange(int(0.2 * RATE)) / RATE
    for label, start in truth:
        i = int(start * RATE)
        y[i : i + t.size] += 0.5 * np.sin(2 * np.pi * (1000 if label == "yes" else 3000) * t)
    path = tmp_path / "close.wav"
    soundfile.write(path, y, RATE)
    heard = []

    class Spy(ToneModel):
        def classify(self, x, lengths=None):
            heard.append(np.array(x))
            return super().classify(x)

    config = DetectorConfig(average_ms=0, suppression_ms=300, listen_ms=500)
    events = detect_file(Spy(), str(path), config)
    assert [e["label"] for e in events] == [label for label, _ in truth]
    for event, (_, start) in zip(events, truth, strict=True):
        assert event["start"] < start + 0.2 and event["end"] > start  # on its own burst
    batches = np.concatenate(heard)
    assert batches.shape[1] == RATE  # the model's whole window, the span at its end
    assert not batches[:, : RATE // 2].any() and batches[:, RATE // 2 :].any(axis=1).all()
    with pytest.raises(Exception, match="listen_ms"):
        DetectorConfig(listen_ms=50)  # shorter than a hop


def test_a_live_session_listens_to_the_same_span_as_detect(tmp_path):
    from pipelines.serving.live import LiveSession

    rng = np.random.default_rng(2)
    y = rng.normal(0, 0.01, RATE * 8).astype(np.float32)
    t = np.arange(int(0.2 * RATE)) / RATE
    for freq, start in ((1000, 2.0), (3000, 2.8), (1000, 5.5)):
        i = int(start * RATE)
        y[i : i + t.size] += 0.5 * np.sin(2 * np.pi * freq * t)
    path = tmp_path / "live.wav"
    soundfile.write(path, y, RATE, subtype="FLOAT")
    config = DetectorConfig(average_ms=200, listen_ms=500)
    want = detect_file(ToneModel(), str(path), config)
    session = LiveSession(ToneModel(), config, RATE)
    got = [e for i in range(0, y.size, 7000) for e in session.push(y[i : i + 7000])]
    got += session.end()
    assert [(e["label"], e["start"], e["end"]) for e in got] == [
        (e["label"], e["start"], e["end"]) for e in want
    ]
    assert [e["label"] for e in want] == ["yes", "no", "yes"]


def test_predict_on_a_long_file_hears_whole_windows_whatever_listen_ms():
    from pipelines.predict import _strongest

    heard = []

    class Spy(ToneModel):
        detector = DetectorConfig(average_ms=300, listen_ms=500)  # an export's own settings

        def classify(self, x, lengths=None):
            heard.append(np.array(x))
            return super().classify(x)

    rng = np.random.default_rng(3)
    y = rng.normal(0, 0.01, RATE * 3).astype(np.float32)
    t = np.arange(int(0.3 * RATE)) / RATE
    y[int(1.2 * RATE) : int(1.2 * RATE) + t.size] += 0.5 * np.sin(2 * np.pi * 3000 * t)
    answer = _strongest(Spy(), iter([y]), 2)
    assert answer["label"] == "no" and answer["start"] < 1.5 and answer["end"] > 1.2
    batches = np.concatenate(heard)
    assert batches.shape[1] == RATE and batches[:, : RATE // 2].any(axis=1).all()  # no silence
