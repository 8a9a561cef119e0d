"""Listening sessions: microphone audio arrives in pieces, detections leave as they happen.

A ``LiveSession`` is ``run.py detect`` (sliding window, smoothing, threshold, refractory period)
fed one piece at a time: ``models.detection.windows`` pulls blocks from an iterator, but here the
audio comes between HTTP requests, so the same windows are cut as pieces arrive. A recording
pushed in pieces gives the events ``detect`` gives for the whole file (tested). ``Sessions``
keeps them by id, forgets idle ones and caps how many are open.

With ``stream`` a session runs the streaming model instead (``detect --stream``'s staggered
runs, ``pipelines.detect.LiveRuns``): each hop of audio is computed ``stream_overlap`` times
rather than once per window that holds it, and the events are those ``detect --stream`` finds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from models.detection import Detector, DetectorConfig, listening, posteriors
from models.serving import SpeechModel
from pipelines.detect import LiveRuns
from pipelines.serving.tensors import RequestError


class LiveSession:
    """One listener's stream: audio in (at the session's rate), finished events out.

    Args:
        model: the speech export.
        config: the detector's settings (with ``stream``, its ``stream_*`` ones apply).
        rate: the sample rate the pieces arrive at (resampled to the model's).
        stream: run the streaming model (``stream_step``) instead of a sliding window.

    Raises:
        ExportError: ``stream`` asked of a model that cannot stream (the message says why).
    """

    def __init__(
        self, model: SpeechModel, config: DetectorConfig, rate: int, stream: bool = False
    ) -> None:
        import soxr

        self.model, self.rate, self.stream = model, rate, stream
        self.config = config  # as given (both modes' settings): later pieces must match it
        self.window = config.listen_samples(model.rate, model.window)  # what an answer hears
        self.hop = config.hop_samples(model.rate)
        self._classify = listening(model.classify, model.window, self.window)
        if stream:
            config = config.for_stream()
            self._runs = LiveRuns(model.stream(config.stream_overlap), self.window, self.hop)
        self.detector = Detector(model.labels, self.window / model.rate, config)
        self._resampler = (
            soxr.ResampleStream(rate, model.rate, 1, dtype="float32", quality="HQ")
            if rate != model.rate
            else None
        )
        self._buffer = np.zeros(0, np.float32)
        self._offset = 0  # stream position of _buffer[0]
        self._total = 0
        self._next_end = self.window
        self.last_used = time.monotonic()
        self.latest: dict[str, Any] | None = None  # the newest window's answer, for a live meter
        self.lock = threading.Lock()

    @property
    def seconds(self) -> float:
        """Audio heard so far."""
        return self._total / self.model.rate

    def push(self, samples: np.ndarray) -> list[dict]:
        """Adds audio (at the session's rate); returns the events that finished."""
        self.last_used = time.monotonic()
        samples = np.asarray(samples, np.float32)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        self._total += samples.size
        if self.stream:
            return self._emit((end / self.model.rate, p) for end, p in self._runs.push(samples))
        self._buffer = np.concatenate([self._buffer, samples])
        spans = []
        while self._total >= self._next_end:
            start = self._next_end - self.window - self._offset
            spans.append((self._next_end, self._buffer[start : start + self.window].copy()))
            self._next_end += self.hop
        # keep what the next window needs, and one window for the end (as windows() does)
        keep_from = min(self._next_end - self.window, self._total - self.window) - self._offset
        if keep_from > 0:
            self._buffer, self._offset = self._buffer[keep_from:], self._offset + keep_from
        return self._emit(posteriors(spans, self._classify, self.model.rate))

    def end(self) -> list[dict]:
        """Ends the stream: a last window over a final partial hop, then the open events."""
        events = []
        if self._resampler is not None:  # the resampler's last samples
            tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            self._resampler = None
            events = self.push(tail)
        if self.stream:
            events += self._emit((end / self.model.rate, p) for end, p in self._runs.end())
            return events + [e.to_dict() for e in self.detector.flush()]
        last_end = self._next_end - self.hop
        spans = []
        if self._total < self.window:
            if self._total:  # shorter than one window: once, whole (the model pads)
                spans = [(self._total, self._buffer[: self._total])]
        elif self._total > last_end:
            spans = [(self._total, self._buffer[-self.window :])]
        events += self._emit(posteriors(spans, self._classify, self.model.rate))
        return events + [e.to_dict() for e in self.detector.flush()]

    def _emit(self, scored: Iterable[tuple[float, np.ndarray]]) -> list[dict]:
        """The events that ``(time, probabilities)`` finish; the newest answer kept as latest."""
        events = []
        for t, p in scored:
            events += [e.to_dict() for e in self.detector.push(t, p)]
            best = int(np.argmax(p))
            self.latest = {
                "time": round(t, 3),
                "label": self.model.labels[best],
                "probability": round(float(p[best]), 4),
            }
        return events


class Sessions:
    """Open listening sessions by id; idle ones are forgotten after ``idle_seconds``."""

    def __init__(self, limit: int = 16, idle_seconds: float = 60.0) -> None:
        self.limit, self.idle_seconds = limit, idle_seconds
        self._open: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def get(self, key: str, make: Any) -> LiveSession:  # noqa: ANN401 - a () -> LiveSession
        """The session ``key``, opened with ``make()`` if new.

        Raises:
            RequestError: 429 when ``limit`` sessions are already open.
        """
        with self._lock:
            now = time.monotonic()
            for old in [k for k, s in self._open.items() if now - s.last_used > self.idle_seconds]:
                del self._open[old]
            if key not in self._open:
                if len(self._open) >= self.limit:
                    raise RequestError(
                        f"{self.limit} listening sessions are open: end one (end=true) or wait "
                        f"{self.idle_seconds:.0f} s for an idle one to close",
                        status=429,
                    )
                self._open[key] = make()
            return self._open[key]

    def close(self, key: str) -> None:
        """Forgets session ``key`` (if open)."""
        with self._lock:
            self._open.pop(key, None)

    def __len__(self) -> int:
        return len(self._open)
