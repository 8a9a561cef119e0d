"""Finding commands in a stream of posteriors: smoothing, a threshold and a refractory period.

The classifier is run on overlapping windows of a long recording; each window gives class
probabilities at its end time. Like Speech Commands' ``RecognizeCommands``, the posteriors are
averaged over the last ``average_ms``, and a command is reported when its smoothed probability
reaches ``threshold``. One utterance lights up several consecutive windows: they form one event.
The first of them ends about as far after the word's start as the last one starts before the
word's end, so the event's span runs between those two times (its middle is the word's middle;
at least two hops wide, and no later than the last window's end). The times are those of the
newest window in the average. Dating a smoothed score by the middle of the windows it averages
instead moved events about 0.2 s earlier (at ``average_ms`` 500), closer to the word's middle on
average, but on recordings of real speakers it left more spans just before their word (two
words of one label in a row merge into one event whose span falls between them) and lost 1-3
points of recall with more false alarms, so it was not kept. A new event of the same label whose
first detection comes within ``suppression_ms`` of the previous one's last is merged into it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from data.checks import check
from data.clips import SILENCE, UNKNOWN


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the detector (``RecognizeCommands``' defaults).

    Attributes:
        threshold: smoothed probability a command must reach.
        average_ms: posteriors are averaged over this much time.
        suppression_ms: refractory period: a same-label event closer than this is merged.
        hop_ms: step between consecutive windows.
        stream_overlap: ``detect --stream`` only: runs of the streaming model that overlap at
            any moment, one starting every ``1 / stream_overlap`` of a window; the answer comes
            from the run that has heard at least ``(stream_overlap - 1) / stream_overlap`` of a
            window. More is closer to the window the model was trained on, and costs
            ``stream_overlap`` computations of each frame.
        stream_threshold: ``threshold`` for ``detect --stream`` (None: ``threshold``); its
            posteriors move differently from the sliding window's, so a preset may set both.
        stream_average_ms: ``average_ms`` for ``detect --stream`` (None: ``average_ms``).
    """

    threshold: float = 0.7
    average_ms: float = 500.0
    suppression_ms: float = 500.0
    hop_ms: float = 100.0
    stream_overlap: int = 2
    stream_threshold: float | None = None
    stream_average_ms: float | None = None

    def __post_init__(self) -> None:
        check(0 < self.threshold <= 1, "threshold", self.threshold, "in (0, 1]")
        for name in ("average_ms", "suppression_ms", "hop_ms", "stream_average_ms"):
            value = getattr(self, name)
            check(value is None or math.isfinite(value), name, value, "a finite number")
        check(self.average_ms >= 0, "average_ms", self.average_ms, ">= 0")
        check(self.suppression_ms >= 0, "suppression_ms", self.suppression_ms, ">= 0")
        check(self.hop_ms > 0, "hop_ms", self.hop_ms, "> 0")
        check(self.stream_overlap >= 2, "stream_overlap", self.stream_overlap, ">= 2")
        check(
            self.stream_threshold is None or 0 < self.stream_threshold <= 1,
            "stream_threshold",
            self.stream_threshold,
            "in (0, 1] or null",
        )
        check(
            self.stream_average_ms is None or self.stream_average_ms >= 0,
            "stream_average_ms",
            self.stream_average_ms,
            ">= 0 or null",
        )

    def for_stream(self) -> DetectorConfig:
        """The settings ``detect --stream`` uses: ``stream_threshold``/``stream_average_ms`` set."""
        return replace(
            self,
            threshold=self.threshold if self.stream_threshold is None else self.stream_threshold,
            average_ms=(
                self.average_ms if self.stream_average_ms is None else self.stream_average_ms
            ),
            stream_threshold=None,
            stream_average_ms=None,
        )

    def hop_samples(self, rate: int) -> int:
        """``hop_ms`` in samples at ``rate`` (at least one)."""
        return max(1, int(round(rate * self.hop_ms / 1000)))

    def check_window(self, window_s: float) -> None:
        """Refuses a hop longer than the model's window, which would skip audio between windows.

        Raises:
            ConfigError: ``hop_ms`` above the window (the message names both).
        """
        check(
            self.hop_ms <= window_s * 1000 + 1e-6,
            "hop_ms",
            self.hop_ms,
            f"at most the model's window ({window_s * 1000:g} ms), or audio between windows "
            "is never heard",
        )

    def with_overrides(self, **values: float | None) -> DetectorConfig:
        """A copy with each value that is not None replaced (e.g. command-line flags).

        A ``threshold`` or ``average_ms`` given applies to both modes: it also replaces
        ``stream_threshold`` or ``stream_average_ms``.
        """
        given = {k: v for k, v in values.items() if v is not None}
        for key in ("threshold", "average_ms"):
            if key in given:
                given.setdefault(f"stream_{key}", None)
        return replace(self, **given)


@dataclass
class Event:
    """A detected command: its label, where it is (seconds) and its best smoothed score."""

    label: str
    start: float
    end: float
    score: float
    detected: float = 0.0  # when it was first detected (end of the first window above threshold)

    def to_dict(self) -> dict[str, float | str]:
        return {
            "label": self.label,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": round(self.score, 4),
        }


class Detector:
    """Turns per-window posteriors into events, incrementally (constant memory).

    Example:
        >>> d = Detector(["_silence_", "yes"], window_s=1.0, config=DetectorConfig(average_ms=0))
        >>> events = [e for t in range(1, 15) for e in d.push(t / 10 + 1,
        ...           np.array([0.1, 0.9]) if 5 <= t <= 8 else np.array([0.9, 0.1]))]
        >>> [(e.label, round(e.start, 1), round(e.end, 1)) for e in events + d.flush()]
        [('yes', 0.8, 1.5)]
    """

    def __init__(
        self,
        labels: list[str],
        window_s: float,
        config: DetectorConfig,
        ignore: tuple[str, ...] = (SILENCE, UNKNOWN),
    ) -> None:
        """Raises ``ConfigError`` for a ``hop_ms`` longer than ``window_s``."""
        config.check_window(window_s)
        self.labels = list(labels)
        self.window_s = window_s
        self.config = config
        self.reportable = np.array([label not in ignore for label in self.labels])
        self._recent: deque[tuple[float, np.ndarray]] = deque()
        self._open: Event | None = None
        self._open_first = 0.0  # end time of the open event's first and last windows
        self._open_last = 0.0
        self._done: Event | None = None  # closed, held back in case the next one merges
        self._done_last = 0.0
        self._newest = 0.0  # the latest window end pushed: no event ends after it

    def push(self, t_end: float, probabilities: np.ndarray) -> list[Event]:
        """Adds the posteriors of the window ending at ``t_end`` seconds; returns finished events."""
        self._recent.append((t_end, np.asarray(probabilities, np.float64)))
        self._newest = t_end
        # windows ending in (t_end - average, t_end]; the margin absorbs float error in times
        horizon = t_end - self.config.average_ms / 1000.0 + 1e-9
        while len(self._recent) > 1 and self._recent[0][0] <= horizon:
            self._recent.popleft()
        smoothed = np.mean([p for _, p in self._recent], axis=0)
        masked = np.where(self.reportable, smoothed, -1.0)
        best = int(np.argmax(masked))
        score = float(smoothed[best])
        finished: list[Event] = []
        if score >= self.config.threshold and self.reportable[best]:
            label = self.labels[best]
            if self._open is not None and self._open.label != label:
                finished += self._close()
            if self._open is None:  # start/end become the span when the event closes
                self._open = Event(label, t_end - self.window_s, t_end, score, detected=t_end)
                self._open_first = t_end
            self._open.start = max(self._open.start, t_end - self.window_s)
            self._open.score = max(self._open.score, score)
            self._open_last = t_end
        elif self._open is not None:
            finished += self._close()
        gap = self.config.suppression_ms / 1000.0
        if self._done is not None and self._open is None and t_end - self._done_last >= gap:
            finished.append(self._done)  # no later window can merge into it any more
            self._done = None
        return finished

    def _close(self) -> list[Event]:
        event, self._open = self._open, None
        # event.start: the last detecting window's start; event.end: the first one's end
        start, end = sorted((event.start, event.end))
        middle, half = (start + end) / 2, max(end - start, 2 * self.config.hop_ms / 1000) / 2
        event.start, event.end = max(0.0, middle - half), min(middle + half, self._newest)
        out = []
        gap = self.config.suppression_ms / 1000.0
        if self._done is not None:
            # refractory period: measured between detections, as RecognizeCommands does
            if self._done.label == event.label and self._open_first - self._done_last < gap:
                self._done.start = min(self._done.start, event.start)
                self._done.end = max(self._done.end, event.end)
                self._done.score = max(self._done.score, event.score)
                self._done_last = self._open_last
                return out
            out.append(self._done)
        self._done, self._done_last = event, self._open_last
        return out

    def flush(self) -> list[Event]:
        """Ends the stream: returns the events still open or held back."""
        out = self._close() if self._open is not None else []
        if self._done is not None:
            out.append(self._done)
            self._done = None
        return out


def score_events(
    events: list[Event], placed: list, ignore: tuple[str, ...], seconds: float
) -> dict[str, float | int]:
    """Recall, wrong-label rate, false alarms per hour and mean delay of detections.

    An event matches a command clip it overlaps; the first right-label event of each clip counts
    as found, a clip with only wrong-label events as a wrong label; every other event (on a
    gap, on an ignored word, a second event on one clip) is a false alarm.

    Args:
        events: the detections.
        placed: ``data.long_recording.Placed`` clips: labels and spans (seconds).
        ignore: labels that are not commands (``_unknown_`` words are placed but never targets).
        seconds: the recording's length.
    """
    commands = [p for p in placed if p.label not in ignore]
    used: set[int] = set()
    found = wrong = 0
    delays = []
    for clip in commands:
        overlapping = [
            i
            for i, e in enumerate(events)
            if i not in used and e.start < clip.end and e.end > clip.start
        ]
        right = [i for i in overlapping if events[i].label == clip.label]
        if right:
            found += 1
            used.add(right[0])
            delays.append(events[right[0]].detected - clip.end)
        elif overlapping:
            wrong += 1
            used.add(overlapping[0])
    false_alarms = len(events) - len(used)
    return {
        "commands": len(commands),
        "recall": round(found / max(len(commands), 1), 4),
        "wrong_label_rate": round(wrong / max(len(commands), 1), 4),
        "false_alarms": false_alarms,
        "false_alarms_per_hour": round(false_alarms / seconds * 3600, 1),
        "mean_delay_seconds": round(float(np.mean(delays)), 3) if delays else None,
        "seconds": round(seconds, 1),
    }


def windows(
    blocks: Iterator[np.ndarray], window: int, hop: int
) -> Iterator[tuple[int, np.ndarray]]:
    """``(end sample, window)`` for every window of ``window`` samples, ``hop`` apart.

    A recording shorter than one window yields it once, whole (the model pads short input). The
    last partial hop of a longer recording is covered by one final window ending at its end.
    """
    buffer = np.zeros(0, np.float32)
    offset = 0  # file position of buffer[0]
    next_end = window
    total = 0
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        total += block.size
        while total >= next_end:
            start = next_end - window - offset
            yield next_end, buffer[start : start + window]
            next_end += hop
        # keep what the next window needs, and at least one window for a final partial hop
        keep_from = min(next_end - window, total - window) - offset
        if keep_from > 0:
            buffer, offset = buffer[keep_from:], offset + keep_from
    last_end = next_end - hop
    if total < window:
        if total:
            yield total, buffer[:total]
    elif total > last_end:
        yield total, buffer[-window:]


def posteriors(
    spans: Iterable[tuple[int, np.ndarray]],
    classify: Callable[[np.ndarray], np.ndarray],
    rate: int,
    batch: int = 32,
) -> Iterator[tuple[float, np.ndarray]]:
    """``(end time in seconds, class probabilities)`` of each ``(end sample, window)``.

    Windows are classified ``batch`` at a time (zero-padded to the widest), so memory holds one
    batch, whatever the recording's length.

    Args:
        spans: ``(end sample, window)`` pairs, e.g. from ``windows``.
        classify: float32 ``[batch, samples]`` -> probabilities ``[batch, classes]``.
        rate: sample rate.
        batch: windows per call of ``classify``.
    """
    pending: list[tuple[int, np.ndarray]] = []

    def run() -> Iterator[tuple[float, np.ndarray]]:
        stacked = np.zeros((len(pending), max(w.size for _, w in pending)), np.float32)
        for row, (_, w) in enumerate(pending):
            stacked[row, : w.size] = w
        for (end, _), p in zip(pending, classify(stacked), strict=True):
            yield end / rate, p

    spans = iter(spans)
    while True:
        try:
            end, w = next(spans)
        except StopIteration:
            break
        except Exception:  # e.g. a decode error partway: the windows read before it still count
            if pending:
                yield from run()
            raise
        pending.append((end, w.copy()))  # windows() hands out views of its buffer
        if len(pending) == batch:
            yield from run()
            pending = []
    if pending:
        yield from run()
