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


def detection_recording(
    clips: list[tuple[np.ndarray, str]],
    rate: int,
    noises: list[np.ndarray],
    seed: int,
    max_clips: int,
) -> tuple[np.ndarray, list[Any]]:
    """The stream evaluation's recording and where each command is in it.

    Up to ``max_clips`` of ``clips`` (``_silence_`` left out: the pauses are silence), drawn with
    ``seed``, laid end to end with noisy pauses (``data.long_recording``).
    """
    from data.clips import SILENCE
    from data.long_recording import build_recording

    rng = np.random.default_rng(seed)
    chosen = [i for i, (_, label) in enumerate(clips) if label != SILENCE]
    chosen = rng.permutation(chosen)[:max_clips]
    return build_recording([clips[i] for i in chosen], rate, noises, rng)


def scored_posteriors(
    model: Any,  # noqa: ANN401 - a Keras classifier
    features: Any,  # noqa: ANN401 - data.audio.FeatureConfig
    audio: np.ndarray,
    hop: int,
    batch_size: int = 128,
    overlap: int | None = None,
    listen: int | None = None,
) -> list[tuple[float, np.ndarray]]:
    """``(time, probabilities)`` every ``hop`` samples of ``audio``.

    ``overlap`` None: the sliding window through the graph's MFCC (``run.py detect``); a number:
    ``run.py detect --stream``'s staggered runs of the streaming model, that many at a time.
    ``listen``: the samples each answer hears (``DetectorConfig.listen_samples``; None: the
    whole window).
    """
    from data.audio import feature_shape
    from models.detection import listening, posteriors, windows

    rate, window = features.sample_rate, feature_shape(features).clip_samples
    listen = window if listen is None else min(listen, window)
    if overlap is None:
        import tensorflow as tf

        from models.features import MfccLayer

        mfcc = MfccLayer(features)
        classify = lambda x: model(mfcc(tf.constant(x)), training=False).numpy()  # noqa: E731
        classify = listening(classify, window, listen)
        return list(posteriors(windows(iter([audio]), listen, hop), classify, rate, batch_size))
    from models.streaming import KerasStream, StreamingClassifier
    from pipelines.detect import stream_posteriors

    streamer = StreamingClassifier(model, features)
    stream = lambda rows: KerasStream(streamer, rows)  # noqa: E731
    return list(stream_posteriors(iter([audio]), stream, hop, rate, listen, overlap))


def detection_scores(
    scored: list[tuple[float, np.ndarray]],
    labels: list[str],
    window_s: float,
    config: DetectorConfig,
    placed: list[Any],
    seconds: float,
) -> dict[str, Any]:
    """``models.detection.score_events`` of the detector with ``config`` over ``scored``."""
    from data.clips import SILENCE, UNKNOWN
    from models.detection import Detector, score_events

    detector = Detector(labels, window_s, config)
    events = [e for t, p in scored for e in detector.push(t, p)] + detector.flush()
    return score_events(events, placed, (SILENCE, UNKNOWN), seconds)


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

    The recording is ``detection_recording``'s; the model runs on sliding windows through the
    graph's MFCC, the detector (``models.detection``) on its posteriors, with ``config`` (the
    run's ``detect`` settings; ``RecognizeCommands``' defaults when None).

    Returns:
        ``models.detection.score_events``: recall, wrong-label rate, false alarms per hour, delay;
        for a causal model also ``stream_step``: the same for ``run.py detect --stream`` on the
        same recording.
    """
    from data.audio import feature_shape
    from models.streaming import stream_problems

    config = config or DetectorConfig()
    rate = features.sample_rate
    audio, placed = detection_recording(clips, rate, noises, seed, max_clips)
    listen = config.listen_samples(rate, feature_shape(features).clip_samples)
    window_s, seconds = listen / rate, audio.size / rate
    hop = config.hop_samples(rate)
    scored = scored_posteriors(model, features, audio, hop, batch_size, listen=listen)
    report = detection_scores(scored, labels, window_s, config, placed, seconds)
    if not stream_problems(model, features):  # a causal model: detect --stream too
        scored = scored_posteriors(
            model, features, audio, hop, batch_size, config.stream_overlap, listen
        )
        stream = config.for_stream()
        report["stream_step"] = detection_scores(scored, labels, window_s, stream, placed, seconds)
    return report
