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
    """Translates sentences (``-`` = lines from stdin), one JSON line per sentence."""
    import unicodedata

    import tensorflow as tf

    sentences: list[str] = []
    for item in inputs:
        if item == "-":
            sentences.extend(line.rstrip("\n") for line in sys.stdin if line.strip())
        else:
            sentences.append(item)
    # Unicode normalization has no TensorFlow op, so it happens here, as at training time.
    form = meta.get("text", {}).get("unicode_form", "NFC")
    for start in range(0, len(sentences), batch):
        chunk = sentences[start : start + batch]
        normalized = [unicodedata.normalize(form, s) for s in chunk]
        out = serve(text=tf.constant(normalized))["translation"].numpy()
        for sentence, translation in zip(chunk, out, strict=True):
            print(
                json.dumps(
                    {"input": sentence, "translation": translation.decode("utf-8")},
                    ensure_ascii=False,
                ),
                flush=True,
            )
    return 0
