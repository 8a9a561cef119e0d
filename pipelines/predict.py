"""``run.py predict``: run an exported SavedModel on raw inputs, one JSON line per input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def predict(export_dir: str, inputs: list[str], top_k: int | None = None, batch: int = 16) -> int:
    """Prints one JSON object per input; returns 1 if any input failed, else 0.

    Speech exports take audio files (any format soundfile reads, any rate): clips up to the
    model's window go in zero-padded batches through ``serving_lengths``, so each answer is the
    one the clip gets alone; a longer recording is searched for commands (as ``run.py detect``)
    and answered with the strongest one and its time. Translation exports take sentences (``-``
    reads one sentence per line from stdin).
    """
    import tensorflow as tf

    meta_path = Path(export_dir) / "assets.extra" / "metadata.json"
    if not meta_path.is_file():
        print(f"error: {export_dir} is not an export folder (no {meta_path})", file=sys.stderr)
        return 2
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("task") == "translation":
        import tensorflow_text  # noqa: F401 - registers the text ops the export uses
    model = tf.saved_model.load(str(export_dir))
    if meta.get("task") == "translation":
        return _translate(model.signatures["serving_default"], meta, inputs)
    k = min(top_k or meta.get("top_k", 3), len(meta["labels"]))
    return _classify(model, meta, inputs, k, batch)


def _top(probs: np.ndarray, labels: list[str], k: int) -> dict:
    order = np.argsort(-probs)[:k]
    return {
        "label": labels[order[0]],
        "probability": round(float(probs[order[0]]), 4),
        "top_k": [{"label": labels[i], "probability": round(float(probs[i]), 4)} for i in order],
    }


def _classify(model, meta: dict, inputs: list[str], k: int, batch: int) -> int:  # noqa: ANN001
    """Answers ``batch`` files at a time, printing each group in input order as it is done."""
    failed = 0
    for start in range(0, len(inputs), batch):
        for result in _classify_group(model, meta, inputs[start : start + batch], k):
            failed += "error" in result
            print(json.dumps(result, ensure_ascii=False), flush=True)
    return 1 if failed else 0


def _classify_group(model, meta: dict, paths: list[str], k: int) -> list[dict]:  # noqa: ANN001
    import tensorflow as tf

    from data.audio import AudioError, load_audio

    rate, labels = int(meta["sample_rate"]), meta["labels"]
    window = int(round(rate * float(meta["features"]["clip_seconds"])))
    results: list[dict] = []
    short: list[tuple[int, np.ndarray]] = []  # clips up to the window, answered in one batch
    for index, path in enumerate(paths):
        try:
            waveform = load_audio(path, rate)
        except AudioError as err:
            results.append({"input": path, "error": str(err)})
            continue
        if waveform.size > window:
            results.append({"input": path, **_strongest(model, meta, waveform, k)})
        else:
            results.append({"input": path})
            short.append((index, waveform))
    if not short:
        return results
    padded = np.zeros((len(short), max(w.size for _, w in short)), np.float32)
    for row, (_, w) in enumerate(short):
        padded[row, : w.size] = w
    lengths_fn = model.signatures.get("serving_lengths")
    if lengths_fn is not None:
        lengths = tf.constant([w.size for _, w in short], tf.int32)
        probs = lengths_fn(waveform=tf.constant(padded), lengths=lengths)["probabilities"]
    else:  # an export from before serving_lengths: one clip at a time
        serve = model.signatures["serving_default"]
        probs = tf.concat(
            [serve(waveform=tf.constant(w[None]))["probabilities"] for _, w in short], axis=0
        )
    for (index, _), p in zip(short, probs.numpy(), strict=True):
        results[index].update(_top(p, labels, k))
    return results


def _strongest(model, meta: dict, waveform: np.ndarray, k: int) -> dict:  # noqa: ANN001
    """The strongest command in a recording longer than the window, with its time."""
    import tensorflow as tf

    from models.detection import Detector, DetectorConfig, posteriors, windows

    rate, labels = int(meta["sample_rate"]), meta["labels"]
    window = int(round(rate * float(meta["features"]["clip_seconds"])))
    config = DetectorConfig()
    serve = model.signatures["serving_default"]
    detector = Detector(labels, window / rate, config)
    spans = windows(iter([waveform]), window, int(rate * config.hop_ms / 1000))
    scored = list(
        posteriors(spans, lambda x: serve(waveform=tf.constant(x))["probabilities"].numpy(), rate)
    )
    ends, probs = np.array([t for t, _ in scored]), np.stack([p for _, p in scored])
    events = [e for t, p in scored for e in detector.push(t, p)]
    events += detector.flush()
    if not events:  # nothing reached the threshold: the most confident window's answer
        best = int(np.argmax(probs.max(axis=1)))
        return {**_top(probs[best], labels, k), "start": None, "end": None}
    event = max(events, key=lambda e: e.score)
    inside = np.flatnonzero((ends >= event.end) & (ends - window / rate <= event.start))
    label_id = labels.index(event.label)
    best = (
        inside[np.argmax(probs[inside, label_id])]
        if inside.size
        else int(np.argmax(probs[:, label_id]))
    )
    return {
        **_top(probs[best], labels, k),
        "label": event.label,
        "probability": round(event.score, 4),  # the detector's smoothed score
        "start": round(event.start, 3),
        "end": round(event.end, 3),
    }


def _translate(serve, meta: dict, inputs: list[str], batch: int = 64) -> int:  # noqa: ANN001
    """Translates sentences (``-`` = lines from stdin), one JSON line per sentence.

    The export normalizes Unicode itself. An empty sentence or a stdin line that is not UTF-8 gets
    an ``error`` line (so outputs stay aligned with inputs) and the exit code is 1.
    """
    import tensorflow as tf

    items: list[tuple[str, str | None]] = []  # (input as shown, error)
    for item in inputs:
        if item == "-":
            for number, raw in enumerate(sys.stdin.buffer, start=1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as err:
                    items.append((f"<stdin line {number}>", f"not UTF-8 ({err.reason})"))
                    continue
                items.append((line, None))
        else:
            items.append((item, None))
    items = [
        (s, e or (None if s.strip() else "empty input: expected a sentence")) for s, e in items
    ]
    failed = 0
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        good = [s for s, e in chunk if e is None]
        out = iter(serve(text=tf.constant(good))["translation"].numpy()) if good else iter(())
        for sentence, error in chunk:
            if error:
                failed += 1
                record = {"input": sentence, "error": error}
            else:
                record = {"input": sentence, "translation": next(out).decode("utf-8")}
            print(json.dumps(record, ensure_ascii=False), flush=True)
    return 1 if failed else 0
