"""``run.py predict``: run an exported SavedModel on raw inputs, one JSON line per input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def predict(export_dir: str, inputs: list[str], top_k: int | None = None) -> int:
    """Prints one JSON object per input; returns 1 if any input failed, else 0.

    Speech exports take wav paths; translation exports take sentences (``-`` reads one sentence
    per line from stdin).
    """
    import tensorflow as tf

    from data.audio import AudioError, load_audio

    meta_path = Path(export_dir) / "assets.extra" / "metadata.json"
    if not meta_path.is_file():
        print(f"error: {export_dir} is not an export folder (no {meta_path})", file=sys.stderr)
        return 2
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("task") == "translation":
        import tensorflow_text  # noqa: F401 - registers the text ops the export uses
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    if meta.get("task") == "translation":
        return _translate(serve, meta, inputs)
    k = min(top_k or meta.get("top_k", 3), len(meta["labels"]))
    failed = 0
    for path in inputs:
        try:
            waveform = load_audio(path, meta["sample_rate"])
        except AudioError as err:
            print(json.dumps({"input": path, "error": str(err)}))
            failed += 1
            continue
        out = serve(waveform=tf.constant(waveform[None], tf.float32))
        probs = out["probabilities"].numpy()[0]
        order = np.argsort(-probs)[:k]
        print(
            json.dumps(
                {
                    "input": path,
                    "label": out["label"].numpy()[0].decode(),
                    "probability": round(float(probs[order[0]]), 4),
                    "top_k": [
                        {"label": meta["labels"][i], "probability": round(float(probs[i]), 4)}
                        for i in order
                    ],
                }
            )
        )
    return 1 if failed else 0


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
