"""``run.py detect``: find commands anywhere in recordings of any length.

The speech export (SavedModel or TFLite) is slid over the audio in steps of ``hop_ms``; the window
is the model's ``clip_seconds`` (or the newest ``listen_ms`` of it, after leading silence). With ``--stream`` the streaming model runs over the audio
instead (restarted every ``1 / stream_overlap`` of a window, so each frame is computed
``stream_overlap`` times rather than once per window that holds it). Files are read in blocks
(soundfile) and resampled as a stream (soxr), so memory stays flat for hours of audio. Each detection is one JSON line ``{"file", "label", "start", "end",
"score"}`` (seconds from the start of the file); ``_silence_`` and ``_unknown_`` are never reported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.checks import check
from models.detection import Detector, DetectorConfig, listening, posteriors, windows
from models.serving import SpeechModel, Stream


def read_blocks(path: str, sample_rate: int, block_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``path`` at ``sample_rate``, resampled on the fly.

    Raises:
        data.audio.AudioError: the file cannot be opened or decoded.
    """
    import soundfile
    import soxr

    from data.audio import AudioError, header_problem

    problem = header_problem(path)
    if problem:
        raise AudioError(problem)
    try:
        info = soundfile.info(path)
        blocks = soundfile.blocks(
            path, blocksize=int(info.samplerate * block_seconds), dtype="float32", always_2d=True
        )
        resampler = (
            soxr.ResampleStream(info.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
            if info.samplerate != sample_rate
            else None
        )
        for block in blocks:
            mono = block.mean(axis=1)
            if not np.all(np.isfinite(mono)):
                raise AudioError("audio contains NaN or Inf samples")
            yield resampler.resample_chunk(mono) if resampler else mono
        if resampler:
            yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)
    except AudioError:
        raise
    except Exception as err:  # noqa: BLE001 - decoder errors vary by format
        raise AudioError(f"unreadable audio ({type(err).__name__}: {err})") from None


def detect_file(
    model: SpeechModel,
    path: str,
    config: DetectorConfig | None = None,
    stream: bool = False,
    batch: int = 32,
) -> list[dict]:
    """The events found in one file, as dicts (``file``, ``label``, ``start``, ``end``, ``score``).

    ``config``: the detector's settings; None takes the export's own (``model.detector``).

    ``stream``: run the streaming model (``stream_step``) over the audio (staggered restarts,
    see ``stream_posteriors``), reading its posteriors every ``hop_ms``, instead of classifying a
    whole window every ``hop_ms``.
    """
    return list(iter_events(model, path, config, stream, batch))


def iter_events(
    model: SpeechModel,
    path: str,
    config: DetectorConfig | None = None,
    stream: bool = False,
    batch: int = 32,
) -> Iterator[dict]:
    """``detect_file``'s events, each as soon as the detector has closed it.

    An hour of audio shows its first commands within seconds, and a decoding error late in a file
    leaves the events found before it already handed out.
    """
    import soundfile
    from rich.console import Console
    from rich.progress import Progress

    from data.audio import AudioError

    config = config or model.detector
    if stream:
        config = config.for_stream()
    rate, window = model.rate, model.window
    hop = config.hop_samples(rate)
    listen = config.listen_samples(rate, window)
    detector = Detector(model.labels, listen / rate, config)
    try:
        seconds = soundfile.info(path).duration  # for the progress bar only
    except Exception:  # noqa: BLE001 - read_blocks reports unreadable files
        seconds = None
    blocks = read_blocks(path, rate)
    scored = (
        stream_posteriors(
            blocks,
            model.stream,
            hop,
            rate,
            listen,
            config.stream_overlap,
            # a short file gets as many runs a call as it needs, not 8 s of them
            min(8.0, seconds + listen / rate) if seconds else 8.0,
        )
        if stream
        else posteriors(
            windows(blocks, listen, hop), listening(model.classify, window, listen), rate, batch
        )
    )
    console = Console(stderr=True)  # stdout: the JSON lines
    # a bar on a terminal only: redirected, rich would leave a blank line on stderr
    # events are yielded (and printed) while the bar is live: rich may route stdout through
    # the bar's console (stderr) only when both are the terminal, or `> file` would miss them
    with Progress(
        console=console,
        transient=True,
        disable=not console.is_terminal,
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=False,
    ) as progress:
        bar = progress.add_task(f"Detecting in {Path(path).name}", total=seconds)
        try:
            for t, p in scored:
                for event in detector.push(t, p):
                    yield {"file": path, **event.to_dict()}
                progress.update(bar, completed=t)
        except AudioError:  # a decode error partway: what was heard before it still counts
            for event in detector.flush():
                yield {"file": path, **event.to_dict()}
            raise
    for event in detector.flush():
        yield {"file": path, **event.to_dict()}


@dataclass(frozen=True)
class RunSchedule:
    """When the staggered runs of ``--stream`` start and answer (see ``stream_posteriors``).

    Run ``k`` starts from a zero state at sample ``k * stride`` and lasts ``length`` samples; it
    answers once it has heard more than ``answers_from`` samples, so exactly one run answers at
    any moment. Answers come every ``every`` hops of the stream, on a grid from the start.
    """

    hop: int  # samples per stream step
    stride: int  # samples between run starts, a multiple of hop
    overlap: int  # runs at any moment
    every: int  # hops between answers

    @classmethod
    def of(cls, stream_hop: int, window: int, overlap: int, hop: int) -> RunSchedule:
        """The schedule of ``overlap`` runs a window long, answering every ``hop`` samples."""
        if overlap < 2:
            raise ValueError(f"overlap {overlap}: expected at least 2 runs at a time")
        check(  # else the answers would come at another hop than the one asked for
            hop % stream_hop == 0,
            "hop_ms (with stream)",
            f"{hop} samples",
            f"a multiple of the stream's step ({stream_hop} samples at the model's rate)",
        )
        stride = max(stream_hop, window // overlap // stream_hop * stream_hop)
        schedule = cls(stream_hop, stride, overlap, hop // stream_hop)
        check(  # else no run would still be going at the first answer's time
            schedule.first_answer * stream_hop <= schedule.length,
            "hop_ms (with stream)",
            f"{hop} samples",
            f"at most about a run's length / stream_overlap ({stride} samples at the "
            "model's rate; a run lasts detect.listen_ms, or the model's window without it)",
        )
        return schedule

    @property
    def length(self) -> int:
        """Samples in one run."""
        return self.overlap * self.stride

    @property
    def answers_from(self) -> int:
        """What a run has heard when it starts answering (samples)."""
        return (self.overlap - 1) * self.stride

    @property
    def first_answer(self) -> int:
        """The first answer's hop (counted from 1), on the ``every`` grid."""
        return (self.answers_from // self.hop // self.every + 1) * self.every


def stream_posteriors(
    blocks: Iterator[np.ndarray],
    open_stream: Callable[[int], Stream],
    hop: int,
    rate: int,
    window: int,
    overlap: int = 2,
    seconds_per_call: float = 8.0,
) -> Iterator[tuple[float, np.ndarray]]:
    """``(time in seconds, probabilities)`` every ``hop`` samples, from staggered restarts.

    The model was trained on windows that start from a zero state, so one state carried over a
    long recording drifts (measured: recall 0.36 where the sliding window found 0.89). Instead
    ``overlap`` runs of a window each overlap at any moment, a new one starting every
    ``window / overlap``; the answer comes from the run that has heard between ``(overlap - 1) /
    overlap`` of a window and a whole one. With 2, any word up to half a window long is heard
    whole. Each frame is computed ``overlap`` times, not ``window / hop`` times as by the sliding
    window. Like the sliding window, whose first answer has heard a whole window, the first
    answer waits until the first run has heard ``(overlap - 1) / overlap`` of a window (a run
    that has heard a few hops answers at random); a recording shorter than that gets one answer,
    at its last whole hop.

    The runs are independent, so about ``seconds_per_call`` of them go through in one call, one
    run a row, each row reset to zero state: one call per several seconds of audio rather than
    one per stride, whose fixed cost dominated short windows. ``LiveRuns`` runs the same
    schedule on audio that arrives in pieces.
    """
    if overlap < 2:
        raise ValueError(f"overlap {overlap}: expected at least 2 runs at a time")
    stream = open_stream(max(1, int(seconds_per_call * rate / max(1, window // overlap))))
    rows = stream.rows
    schedule = RunSchedule.of(stream.hop, window, overlap, hop)
    stride, length, answers_from = schedule.stride, schedule.length, schedule.answers_from
    every, first_answer = schedule.every, schedule.first_answer
    done, first = 0, True  # hops answered so far
    pending = np.zeros(0, np.float32)  # audio from the start of the next run

    def runs(count: int) -> Iterator[tuple[float, np.ndarray]]:
        """Runs ``count`` (<= rows) runs from the start of ``pending``, ``stride`` apart."""
        nonlocal done, first, pending
        segments = np.zeros((rows, length), np.float32)  # a steady shape: one compilation
        for row in range(count):
            piece = pending[row * stride : row * stride + length]
            segments[row, : piece.size] = piece  # a short last run: zeros after it (causal)
        answers = stream.run_segments(segments)
        for row in range(count):
            heard = min(length, pending.size - row * stride)  # its real audio: whole hops only
            begin, hops = answers_from, heard // stream.hop
            if first and row == 0:  # no earlier run: time starts at its first answer
                if hops < first_answer:  # the whole recording: one answer, at its end
                    if hops:
                        yield hops * stream.hop / rate, answers[row, hops - 1]
                    pending = pending[:0]
                    return
                done = begin // stream.hop
            for probabilities in answers[row, begin // stream.hop : hops]:
                done += 1
                if done % every == 0:
                    yield done * stream.hop / rate, probabilities
        first = False
        pending = pending[count * stride :]

    for block in blocks:
        pending = np.concatenate([pending, block])
        while pending.size >= (rows - 1) * stride + length:  # enough audio for a full call
            yield from runs(rows)
    if first and 0 < pending.size < stream.hop:
        # shorter than one hop: heard zero-padded, as the sliding window pads a short recording
        pending = np.concatenate([pending, np.zeros(stream.hop - pending.size, np.float32)])
    # the end: the runs whose answering stride holds at least one whole hop
    left = max(0, (pending.size - answers_from - stream.hop) // stride + 1)
    if first and not left and pending.size >= stream.hop:
        left = 1  # shorter than the first run's answers: one answer, at its end
    while left > 0:
        yield from runs(min(left, rows))
        left -= rows


def stream_schedule(model: SpeechModel, config: DetectorConfig) -> RunSchedule:
    """The staggered runs ``--stream`` makes for ``model`` with ``config``.

    The one check that ``--stream`` can run, made before any audio is read.

    Raises:
        ExportError: the model cannot stream (the message names its settings).
        ConfigError: ``hop_ms`` too long for the runs (the message names it).
    """
    model.stream()  # refuses a non-causal model
    stream = model.meta["stream"]
    overlap = config.for_stream().stream_overlap
    listen = config.listen_samples(model.rate, model.window)
    return RunSchedule.of(
        int(stream["hop_samples"]), listen, overlap, config.hop_samples(model.rate)
    )


class LiveRuns:
    """``stream_posteriors``' staggered runs on audio that arrives in pieces (a live stream).

    Every run hears the same audio, so the ``overlap`` runs are the rows of one stream, fed each
    hop together; a row is reset to zero state when its next run starts. The answers are those
    ``stream_posteriors`` gives for the whole recording (the same runs over the same samples).
    Hops go to the model in calls of a power of two of them (at most ``MAX_HOPS``), so a
    SavedModel compiles a few call sizes, not one per piece size.
    """

    MAX_HOPS = 32

    def __init__(self, stream: Stream, window: int, hop: int) -> None:
        """``stream``: ``overlap`` rows, zero state; ``hop``: samples between answers."""
        self.stream = stream
        self.schedule = RunSchedule.of(stream.hop, window, stream.rows, hop)
        self._hops = 0  # hops heard
        self._pending = np.zeros(0, np.float32)  # a partial hop
        self._last: np.ndarray | None = None  # the first run's newest answer, for a short stream

    def push(self, samples: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Feeds samples; returns ``(end sample, probabilities)`` of the answers now due."""
        data = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        step, per_run = self.schedule.hop, self.schedule.stride // self.schedule.hop
        whole = data.size // step
        self._pending, out = data[whole * step :], []
        done = 0
        while done < whole:
            if self._hops % per_run == 0:  # a run starts here, in the row of the run it ends
                self.stream.reset_row(self._hops // per_run % self.schedule.overlap)
            until_start = per_run - self._hops % per_run
            count = min(whole - done, until_start, self.MAX_HOPS)
            count = 1 << (count.bit_length() - 1)
            answers = self.stream.push(data[done * step : (done + count) * step])
            for i in range(count):
                self._hops += 1
                out += self._answer(answers[:, i])
            done += count
        return out

    def end(self) -> list[tuple[int, np.ndarray]]:
        """The stream ended: one answer if it was too short to have had one.

        A partial hop at the end is dropped, as ``stream_posteriors`` drops it, unless the whole
        stream was shorter than a hop: that one is heard zero-padded to a hop.
        """
        out = []
        if self._hops == 0 and self._pending.size:
            out = self.push(np.zeros(self.schedule.hop - self._pending.size, np.float32))
        if self._hops < self.schedule.first_answer and self._last is not None:
            out.append((self._hops * self.schedule.hop, self._last))
        return out

    def _answer(self, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """The answer due after the hop just heard (``rows``: every row's probabilities)."""
        schedule, heard = self.schedule, self._hops * self.schedule.hop
        if self._hops < schedule.first_answer:  # the first run (row 0) has not heard enough
            self._last = rows[0]
            return []
        if self._hops % schedule.every:
            return []
        run = (heard - schedule.hop - schedule.answers_from) // schedule.stride
        return [(heard, rows[run % schedule.overlap])]


def detect(
    export_dir: str, files: list[str], overrides: dict[str, float | None], stream: bool = False
) -> int:
    """Prints one JSON line per detection; an ``error`` line (and exit code 1) per bad file.

    ``overrides``: detector settings given on the command line (None: the export's own, chosen
    for its preset on validation data, see ``metadata.json`` ``detector``).
    """
    from data.audio import AudioError
    from data.checks import ConfigError
    from models.serving import ExportError, load_speech_model

    try:
        model = load_speech_model(export_dir)
        config = model.detector.with_overrides(**overrides)
        config.check_window(model.window / model.rate)
        if stream:
            stream_schedule(model, config)  # fails early if the model or the hop cannot stream
    except (ExportError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    for path in files:
        try:
            for event in iter_events(model, path, config, stream=stream):
                print(json.dumps(event, ensure_ascii=False), flush=True)
        except AudioError as err:
            print(json.dumps({"file": path, "error": str(err)}, ensure_ascii=False), flush=True)
            failed += 1
    return 1 if failed else 0
