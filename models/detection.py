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
first detection comes within ``suppression_ms`` of the previous one's last is merged into it, if a
window can have heard both; a word goes on at most ``suppression_ms`` after its first detection, so
windows that start later hear another word of the label: a new event, even with no dip between.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from data.checks import check
from data.clips import SILENCE, UNKNOWN

# Bounds on the work one request can ask for (the server takes these settings from a query):
# answers finer than the presets' feature frame (10 ms) add nothing a user can see, and each is
# a whole window's computation; past 16 runs a frame is computed 16 times for a 1/16 finer start.
MIN_HOP_MS = 10.0
MAX_STREAM_OVERLAP = 16
MAX_AVERAGE_MS = 5000.0  # each answer averages the windows of this span: bounds a request's work


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the detector (``RecognizeCommands``' defaults).

    Attributes:
        threshold: smoothed probability a command must reach.
        average_ms: posteriors are averaged over this much time.
        suppression_ms: refractory period: a same-label event closer than this is merged (if a
            window can have heard both); also the longest a word goes on after its first
            detection, beyond which windows hear the next word of the label.
        hop_ms: step between consecutive windows.
        stream_overlap: ``detect --stream`` only: runs of the streaming model that overlap at
            any moment, one starting every ``1 / stream_overlap`` of a window; the answer comes
            from the run that has heard at least ``(stream_overlap - 1) / stream_overlap`` of a
            window. More is closer to the window the model was trained on, and costs
            ``stream_overlap`` computations of each frame.
        stream_threshold: ``threshold`` for ``detect --stream`` (None: ``threshold``); its
            posteriors move differently from the sliding window's, so a preset may set both.
        stream_average_ms: ``average_ms`` for ``detect --stream`` (None: ``average_ms``).
        listen_ms: the audio each answer hears, the newest ``listen_ms`` (None: the model's
            whole window). The sliding window gets the span padded with leading silence to the
            model's window; ``--stream``'s runs last this long (from a zero state). A model
            whose window holds several words at short pauses (``fsdd``'s 2 s) hears one or two
            at a time instead.
    """

    threshold: float = 0.7
    average_ms: float = 500.0
    suppression_ms: float = 500.0
    hop_ms: float = 100.0
    stream_overlap: int = 2
    stream_threshold: float | None = None
    stream_average_ms: float | None = None
    listen_ms: float | None = None

    def __post_init__(self) -> None:
        check(0 < self.threshold <= 1, "threshold", self.threshold, "in (0, 1]")
        for name in ("average_ms", "suppression_ms", "hop_ms", "stream_average_ms", "listen_ms"):
            value = getattr(self, name)
            check(value is None or math.isfinite(value), name, value, "a finite number")
        for name in ("average_ms", "stream_average_ms"):
            value = getattr(self, name)
            check(
                value is None or 0 <= value <= MAX_AVERAGE_MS,
                name,
                value,
                f"in [0, {MAX_AVERAGE_MS:g}] ms"
                + (" or null" if name.startswith("stream") else ""),
            )
        check(self.suppression_ms >= 0, "suppression_ms", self.suppression_ms, ">= 0")
        check(self.hop_ms >= MIN_HOP_MS, "hop_ms", self.hop_ms, f">= {MIN_HOP_MS:g}")
        check(
            2 <= self.stream_overlap <= MAX_STREAM_OVERLAP,
            "stream_overlap",
            self.stream_overlap,
            f"2..{MAX_STREAM_OVERLAP}",
        )
        check(
            self.listen_ms is None or self.listen_ms >= self.hop_ms,
            "listen_ms",
            self.listen_ms,
            f"at least hop_ms ({self.hop_ms:g}) or null (the whole window)",
        )
        check(
            self.stream_threshold is None or 0 < self.stream_threshold <= 1,
            "stream_threshold",
            self.stream_threshold,
            "in (0, 1] or null",
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

    def listen_samples(self, rate: int, window: int) -> int:
        """The samples each answer hears: ``listen_ms`` at ``rate``, at most ``window``."""
        if self.listen_ms is None:
            return window
        return min(window, max(1, int(round(rate * self.listen_ms / 1000))))

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


@dataclass
class _Heard:
    """An event while it may still grow: the windows above the threshold for one word."""

    label: str
    first: float  # end of the first detecting window
    last: float  # end of the last one
    score: float  # best smoothed score
    begun_by_split: bool = False  # its first window came when the previous word's had left it
    ended_by_split: bool = False  # its last windows hear the next word of the same label


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
        self._open: _Heard | None = None
        self._done: _Heard | None = None  # closed, held back in case the next one is its flicker
        self._newest = 0.0  # the latest window end pushed: no event ends after it

    def push(self, t_end: float, probabilities: np.ndarray) -> list[Event]:
        """Adds the posteriors of the window ending at ``t_end`` seconds; returns finished events."""
        self._recent.append((t_end, np.asarray(probabilities, np.float64)))
        self._newest = t_end
        # windows ending in (t_end - average, t_end]; the margin absorbs float error in times
        horizon = t_end - self.config.average_ms / 1000.0 + 1e-9
        while len(self._recent) > 1 and self._recent[0][0] <= horizon:
            self._recent.popleft()
        return self._score(t_end)

    def _score(self, t_end: float) -> list[Event]:
        """Tests the mean of the recent windows at ``t_end``; returns finished events."""
        smoothed = np.mean([p for _, p in self._recent], axis=0)
        masked = np.where(self.reportable, smoothed, -1.0)
        best = int(np.argmax(masked))
        score = float(smoothed[best])
        finished: list[Event] = []
        gap = self.config.suppression_ms / 1000.0
        if score >= self.config.threshold and self.reportable[best]:
            label = self.labels[best]
            split = False
            if self._open is not None and self._open.label != label:
                finished += self._close()
            elif self._open is not None and not self._same_word(self._open.first, t_end):
                self._open.ended_by_split = split = True  # the next word of the same label
                finished += self._close()
            if self._open is None:
                done = self._done
                # refractory period, measured between detections as RecognizeCommands does
                near = done is not None and done.label == label and t_end - done.last < gap
                same = near and self._same_word(done.first, t_end)
                if same and not split:
                    self._open, self._done = done, None  # a flicker: the held-back event goes on
                else:
                    if near and not same:
                        done.ended_by_split = split = True  # the next word, after a short dip
                    if split:  # what was split off can never be joined again: out at once
                        finished.append(self._event(done))
                        self._done = None
                    self._open = _Heard(label, t_end, t_end, score, begun_by_split=split)
            self._open.last = t_end
            self._open.score = max(self._open.score, score)
        elif self._open is not None:
            finished += self._close()
        if self._done is not None and self._open is None and t_end - self._done.last >= gap:
            finished.append(self._event(self._done))  # no later window can join it any more
            self._done = None
        return finished

    def _close(self) -> list[Event]:
        """Ends the open event, holding it back; returns the one held back before it."""
        out = [self._event(self._done)] if self._done is not None else []
        self._done, self._open = self._open, None
        return out

    def _same_word(self, first: float, t_end: float) -> bool:
        """Whether the smoothed score at ``t_end`` can hear the word first detected at ``first``.

        The score at a time averages the windows ending in the last ``average_ms``, so the word
        behind the detection at ``first`` began in ``[first - average - window, first]``; a
        model may fire on a word's beginning, so the word may go on after ``first``, for at most
        ``suppression_ms`` (the refractory period: one word's detections come within it). A
        score whose windows all start after that hears other audio: another utterance of the
        label, so a new event, even while the score never fell below the threshold in between
        (two words of one label less than a window apart).
        """
        heard_from = t_end - self.config.average_ms / 1000.0 - self.window_s
        return heard_from < first + self.config.suppression_ms / 1000.0 - 1e-6

    def _event(self, heard: _Heard) -> Event:
        """The event's span from its windows: where the word they all heard must be."""
        least = 2 * self.config.hop_ms / 1000
        last_start = heard.last - self.window_s
        if heard.begun_by_split or heard.ended_by_split:
            # one side of a split event belongs to the other word: the first detection of one
            # begun at a split came only once the windows had left the previous word (late);
            # the last windows of one ended at a split hear the next word. Its span is taken
            # from the side it has of its own, up to the averaging time wide: after its
            # windows' latest start (where the word begins, about) or before its first
            # detection (where the word ends, about).
            wide = max(self.config.average_ms / 1000, least)
            end = last_start + wide if heard.begun_by_split else heard.first
            start = end - wide
        else:  # inside every detecting window: after the last one's start, before the first's end
            start, end = sorted((last_start, heard.first))
            middle, half = (start + end) / 2, max(end - start, least) / 2
            start, end = middle - half, middle + half
        return Event(
            heard.label, max(0.0, start), min(end, self._newest), heard.score, detected=heard.first
        )

    def flush(self) -> list[Event]:
        """Ends the stream: returns the events still open or held back.

        A word in the last moments is heard by the last few windows only, which the average
        dilutes with the earlier ones that did not hear it; as at the start, where the first
        windows are averaged alone, the last windows are tested alone too: the oldest dropped one
        at a time.
        """
        out: list[Event] = []
        while len(self._recent) > 1:
            self._recent.popleft()
            out += self._score(self._newest)
        out += self._close() if self._open is not None else []
        if self._done is not None:
            out.append(self._event(self._done))
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


def listening(
    classify: Callable[[np.ndarray], np.ndarray], window: int, listen: int
) -> Callable[[np.ndarray], np.ndarray]:
    """``classify`` of spans of ``listen`` samples (``DetectorConfig.listen_samples``).

    The spans (from ``windows`` with the span's length) are zero-padded in front to the
    model's ``window``: leading silence, then the span. A span of the whole window needs no
    padding: ``classify`` itself.
    """
    if listen >= window:
        return classify

    def heard(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        padded = np.zeros((batch.shape[0], max(window, batch.shape[1])), np.float32)
        padded[:, padded.shape[1] - batch.shape[1] :] = batch
        return classify(padded)

    return heard


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
