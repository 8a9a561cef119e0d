"""``run.py predict``: run an exported SavedModel on raw inputs, one JSON line per input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def predict(export_dir: str, inputs: list[str], top_k: int | None = None) -> int:
    """Prints one JSON object per input; returns 1 if any input failed, else 0."""
    import tensorflow as tf

    from data.audio import AudioError, load_audio

    meta_path = Path(export_dir) / "assets.extra" / "metadata.json"
    if not meta_path.is_file():
        print(f"error: {export_dir} is not an export folder (no {meta_path})", file=sys.stderr)
        return 2
    meta = json.loads(meta_path.read_text())
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
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
