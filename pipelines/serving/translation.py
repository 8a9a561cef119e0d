"""A served translation export.

Its signatures as they are: ``serving_default`` (the translation) and, in exports made since it
was added, ``attention`` (the greedy decode and its attention weights, for the page's heat map).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.serving.served import TASKS, ExportPath, Served, run_signature, signature_specs
from pipelines.serving.tensors import TensorSpec


@TASKS.register("translation")
class TranslationServed(Served):
    """A translation SavedModel (raw text in, raw text out)."""

    task = "translation"

    def __init__(self, export: ExportPath, meta: dict) -> None:
        super().__init__(export, meta)
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the Unicode normalization op

        self._functions = dict(tf.saved_model.load(str(export.path)).signatures)
        self._specs = {name: signature_specs(f) for name, f in self._functions.items()}

    def signatures(self) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
        return self._specs

    def run(self, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_signature(self._functions[signature], arrays)

    def summary(self, metrics: dict[str, Any]) -> list[tuple[str, str]]:
        from pipelines.reporting import translation_summary

        if metrics:
            return translation_summary(metrics)
        rows = [("source", f"{self.meta.get('source', '?')} ({self.meta.get('direction', '?')})")]
        if self.meta.get("test_bleu") is not None:
            rows.append(("test BLEU", f"{self.meta['test_bleu']:.2f}"))
        return rows + [("run directory", "not found next to the export: no metrics or plots")]

    def info(self) -> dict[str, Any]:
        decode = self.meta.get("decode", {})
        samples = self.metrics().get("samples", [])
        return {
            **super().info(),
            "examples": [s["source"] for s in samples[:4]],  # test sentences to try
            "beam_width": decode.get("beam_width"),
            "max_length": decode.get("max_length"),
            "attention": "attention" in self._functions,
        }
