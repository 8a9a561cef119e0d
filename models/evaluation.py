"""Classification metrics of a test split: accuracy, per-class scores, confusion, worst errors."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.detection import DetectorConfig


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


def windowed_accuracy(
    model: Any,
    clips: list[tuple[np.ndarray, str]],
    labels: list[str],
    features: Any,
    noises: list[np.ndarray],
    seed: int,
    batch_size: int = 128,
) -> float:
    """Accuracy with each clip somewhere in a full window of background noise.

    The noise is -50 to -35 dBFS and the position random (seeded): the clip as a microphone or a
    client padding to the model's window delivers it.

    Args:
        model: the trained classifier (raw MFCC frames in).
        clips: ``(waveform, label)`` at the model's sample rate.
        labels: class names by id.
        features: the ``FeatureConfig`` the model was trained with.
        noises: background recordings (white noise when empty).
        seed: placement seed.
        batch_size: prediction batch size.
    """
    from data.audio import feature_shape, mfcc
    from data.augment import place_in_window

    rng = np.random.default_rng(seed)
    n = feature_shape(features).clip_samples
    frames = np.stack([mfcc(place_in_window(y, n, noises, rng), features) for y, _ in clips])
    probs = model.predict(frames, batch_size=batch_size, verbose=0)
    truth = np.array([labels.index(label) for _, label in clips])
    return float(np.mean(probs.argmax(axis=1) == truth))


def stream_metrics(
    model: Any,
    clips: list[tuple[np.ndarray, str]],
    labels: list[str],
    features: Any,
    noises: list[np.ndarray],
    seed: int,
    max_clips: int,
    batch_size: int = 128,
    config: DetectorConfig | None = None,
) -> dict[str, Any]:
    """The detector of ``run.py detect`` on a long recording made of ``clips``.

    Up to ``max_clips`` clips (``_silence_`` left out: the pauses are silence) are laid end to end
    with noisy pauses (``data.long_recording``); the model runs on sliding windows through the
    graph's MFCC, the detector (``models.detection``) on its posteriors, with ``config`` (the
    run's ``detect`` settings; ``RecognizeCommands``' defaults when None).

    Returns:
        ``models.detection.score_events``: recall, wrong-label rate, false alarms per hour, delay;
        for a causal model also ``stream_step``: the same for ``run.py detect --stream`` on the
        same recording.
    """
    import tensorflow as tf

    from data.audio import feature_shape
    from data.clips import SILENCE, UNKNOWN
    from data.long_recording import build_recording
    from models.detection import Detector, posteriors, score_events, windows
    from models.features import MfccLayer
    from models.streaming import KerasStream, StreamingClassifier, stream_problems

    rng = np.random.default_rng(seed)
    chosen = [i for i, (_, label) in enumerate(clips) if label != SILENCE]
    chosen = rng.permutation(chosen)[:max_clips]
    rate = features.sample_rate
    audio, placed = build_recording([clips[i] for i in chosen], rate, noises, rng)
    config = config or DetectorConfig()
    window = feature_shape(features).clip_samples
    detector = Detector(labels, window / rate, config)
    mfcc = MfccLayer(features)
    spans = windows(iter([audio]), window, config.hop_samples(rate))
    classify = lambda x: model(mfcc(tf.constant(x)), training=False).numpy()  # noqa: E731
    events = [
        e for t, p in posteriors(spans, classify, rate, batch_size) for e in detector.push(t, p)
    ]
    events += detector.flush()
    ignore, seconds = (SILENCE, UNKNOWN), audio.size / rate
    report = score_events(events, placed, ignore, seconds)
    if not stream_problems(model, features):  # a causal model: detect --stream too
        from pipelines.detect import stream_posteriors

        streamer = StreamingClassifier(model, features)
        detector = Detector(labels, window / rate, config.for_stream())
        hop = config.hop_samples(rate)
        scored = stream_posteriors(
            iter([audio]),
            lambda rows: KerasStream(streamer, rows),
            hop,
            rate,
            window,
            config.stream_overlap,
        )
        events = [e for t, p in scored for e in detector.push(t, p)] + detector.flush()
        report["stream_step"] = score_events(events, placed, ignore, seconds)
    return report
