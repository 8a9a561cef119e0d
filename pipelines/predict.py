"""``run.py predict``: run an exported SavedModel on raw inputs, one JSON line per input."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from models.serving import SpeechModel


def predict(export_dir: str, inputs: list[str], top_k: int | None = None, batch: int = 16) -> int:
    """Prints one JSON object per input; returns 1 if any input failed, else 0.

    Speech exports (a SavedModel folder, a TFLite folder or a ``.tflite`` file) take audio files
    (any format soundfile reads, any rate): clips up to the model's window go in zero-padded
    batches through ``serving_lengths``, so each answer is the one the clip gets alone; a longer
    recording is searched for commands (as ``run.py detect``) and answered with the strongest one
    and its time. Translation exports take sentences (``-`` reads one sentence per line from
    stdin).
    """
    from data.checks import ConfigError, check
    from models.serving import ExportError, load_speech_model, read_metadata

    try:
        check(top_k is None or top_k >= 1, "--top-k", top_k, "at least 1")
        folder, meta, _ = read_metadata(export_dir)
    except (ExportError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if meta.get("task") == "translation":
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the text ops the export uses

        serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
        return _translate(serve, meta, inputs)
    try:
        model = load_speech_model(export_dir)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    k = min(top_k or meta.get("top_k", 3), len(meta["labels"]))
    return _classify(model, inputs, k, batch)


def _top(probs: np.ndarray, labels: list[str], k: int) -> dict:
    order = np.argsort(-probs)[:k]
    return {
        "label": labels[order[0]],
        "probability": round(float(probs[order[0]]), 4),
        "top_k": [{"label": labels[i], "probability": round(float(probs[i]), 4)} for i in order],
    }


def _classify(model: SpeechModel, inputs: list[str], k: int, batch: int) -> int:
    """Answers ``batch`` files at a time, printing each group in input order as it is done."""
    failed = 0
    for start in range(0, len(inputs), batch):
        for result in _classify_group(model, inputs[start : start + batch], k):
            failed += "error" in result
            print(json.dumps(result, ensure_ascii=False), flush=True)
    return 1 if failed else 0


def _classify_group(model: SpeechModel, paths: list[str], k: int) -> list[dict]:
    from data.audio import AudioError, load_audio

    results: list[dict] = []
    short: list[tuple[int, np.ndarray]] = []  # clips up to the window, answered in one batch
    for index, path in enumerate(paths):
        try:
            if _longer_than_window(path, model):  # read in blocks: memory stays flat
                from pipelines.detect import read_blocks

                results.append(
                    {"input": path, **_strongest(model, read_blocks(path, model.rate), k)}
                )
                continue
            waveform = load_audio(path, model.rate, allow_silent=True)
        except AudioError as err:
            results.append({"input": path, "error": str(err)})
            continue
        if waveform.size > model.window:  # a format only the fallback decoder reads
            results.append({"input": path, **_strongest(model, iter([waveform]), k)})
        else:
            results.append({"input": path})
            short.append((index, waveform))
    if not short:
        return results
    padded = np.zeros((len(short), max(w.size for _, w in short)), np.float32)
    for row, (_, w) in enumerate(short):
        padded[row, : w.size] = w
    probs = model.classify(padded, np.array([w.size for _, w in short]))
    for (index, _), p in zip(short, probs, strict=True):
        results[index].update(_top(p, model.labels, k))
    return results


def _longer_than_window(path: str, model: SpeechModel) -> bool:
    """Whether libsndfile reads ``path`` and it holds more than one window at the model's rate."""
    import soundfile

    try:
        info = soundfile.info(path)
    except Exception:  # noqa: BLE001 - load_audio tries the fallback decoder and reports
        return False
    return info.frames * model.rate / info.samplerate > model.window + 1


def _strongest(model: SpeechModel, blocks: Iterator[np.ndarray], k: int) -> dict:
    """The strongest command in a recording longer than the window, with its time.

    Raises:
        AudioError: ``blocks`` failed to decode.
    """
    from models.detection import Detector, posteriors, windows

    rate, labels, window = model.rate, model.labels, model.window
    # the whole window, whatever the detector's listen_ms: that span keeps neighbouring words
    # apart, and a file given to predict holds one command (on a development speaker's 3-s
    # files a 1.2-s span gained nothing: 0.925 against 0.93)
    config = replace(model.detector, listen_ms=None)
    detector = Detector(labels, window / rate, config)
    spans = windows(blocks, window, config.hop_samples(rate))
    scored = list(posteriors(spans, model.classify, rate))
    if not scored:  # a header that promised more samples than the file holds
        from data.audio import AudioError

        raise AudioError("empty audio (0 samples)")
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
