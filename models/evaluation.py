"""Classification metrics of a test split: accuracy, per-class scores, confusion, worst errors."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_report(
    probs: np.ndarray,
    truth: np.ndarray,
    labels: list[str],
    paths: np.ndarray,
    misclassified: int,
) -> dict[str, Any]:
    """Test metrics of a classifier.

    Args:
        probs: ``[n, classes]`` predicted probabilities.
        truth: ``[n]`` true class ids.
        labels: class names by id.
        paths: ``[n]`` where each example came from.
        misclassified: how many of the most confident errors to list.

    Returns:
        ``test_accuracy``, ``test_examples``, ``per_class`` (precision, recall, F1, support),
        ``confusion_matrix`` (labels and rows = truth) and ``misclassified``.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    predicted = probs.argmax(axis=1)
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=ids, zero_division=0
    )
    matrix = confusion_matrix(truth, predicted, labels=ids)
    wrong = np.flatnonzero(predicted != truth)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:misclassified]
    return {
        "test_accuracy": float(np.mean(predicted == truth)),
        "test_examples": len(truth),
        "per_class": {
            label: {
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
                "f1": round(float(f), 4),
                "support": int(s),
            }
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {"labels": labels, "matrix": matrix.tolist()},
        "misclassified": [
            {
                "path": str(paths[i]),
                "true": labels[truth[i]],
                "predicted": labels[predicted[i]],
                "probability": round(float(probs[i, predicted[i]]), 4),
            }
            for i in wrong
        ],
    }
