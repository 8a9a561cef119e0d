"""SavedModel export: a serving signature on raw inputs, written atomically, with metadata."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from data.audio import FeatureConfig
from data.files import replace_dir
from models.features import MfccLayer

METADATA = Path("assets.extra") / "metadata.json"
STREAM_TOLERANCE = 1e-4  # stream_step after a window vs serving_default on it (float32)


class ExportCheckError(RuntimeError):
    """A written export does not answer like the trained model; nothing was published."""


def versions() -> dict[str, str]:
    """Versions of the libraries that produced an export."""
    import librosa

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def check_waveform_input(waveform: tf.Tensor) -> tf.Tensor:
    """Graph checks at the serving boundary: a clear error instead of a meaningless answer.

    Raises (when the graph runs) ``InvalidArgumentError`` for a batch with no samples or with
    NaN/Inf samples.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    checks = [
        tf.debugging.assert_positive(
            tf.shape(waveform)[1],
            message="waveform has 0 samples: expected float32 [batch, samples] with samples >= 1",
        ),
        tf.debugging.assert_all_finite(
            waveform, message="waveform contains NaN or Inf samples: expected finite float32"
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(waveform)


def features_of_lengths(mfcc: MfccLayer, waveform: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """The model's input for rows of a zero-padded batch, each as if it were sent alone.

    Args:
        mfcc: the export's front end.
        waveform: float32 ``[batch, samples]``, zero-padded.
        lengths: int32 ``[batch]``, the samples of each row (checked by the caller).

    Returns:
        The MFCC frames; with ``features.window: masked``, the frames a row alone would not have
        are zero, which the model masks (with ``full`` zero padding is what a row alone gets).
    """
    config, shape = mfcc.feature_config, mfcc.shape_info
    waveform = waveform * tf.sequence_mask(lengths, tf.shape(waveform)[1], dtype=tf.float32)
    features = mfcc(waveform)
    if config.window == "full":
        return features
    # A row alone has 1 + length // hop frames (streaming front end: length // hop, at least
    # one); the rest are zeroed, which the model masks.
    whole = tf.minimum(lengths, shape.clip_samples) // shape.hop_length
    frames = tf.maximum(whole, 1) if config.streaming else 1 + whole
    keep = tf.sequence_mask(frames, tf.shape(features)[1], dtype=features.dtype)
    return features * keep[..., None]


def export_speech_classifier(
    model: keras.Model,
    features: FeatureConfig,
    labels: list[str],
    out_dir: Path,
    metadata: dict[str, Any],
    check_waveform: np.ndarray | None = None,
) -> Path:
    """Writes a SavedModel whose ``serving_default`` maps raw waveforms to labels.

    Signature: ``waveform`` float32 ``[batch, samples]`` at ``features.sample_rate`` (any length;
    trimmed to ``clip_seconds``) -> ``label`` string ``[batch]`` and ``probabilities`` float32
    ``[batch, classes]``. The MFCC is computed in the graph by ``MfccLayer``.

    Args:
        model: a trained classifier on raw MFCC frames, built with ``use_cudnn=False`` so the
            graph runs on any CPU.
        features: the feature settings the model was trained with.
        labels: class names, in output order.
        out_dir: final location; written to a sibling temporary folder first, then renamed.
        metadata: extra fields for ``assets.extra/metadata.json``.
        check_waveform: if given, the reloaded export must reproduce the Keras model's
            probabilities on it, or the export is refused.

    Returns:
        ``out_dir``.
    """
    mfcc = MfccLayer(features, name="mfcc")
    label_table = tf.constant(labels)

    def answer(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        index = tf.argmax(probabilities, axis=-1)
        return {"label": tf.gather(label_table, index), "probabilities": probabilities}

    def serve(waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        waveform = check_waveform_input(waveform)
        return answer(model(mfcc(waveform), training=False))

    def serve_lengths(waveform: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        """Rows of different lengths in one zero-padded batch: each answered as if alone."""
        waveform = check_waveform_input(waveform)
        width = tf.shape(waveform)[1]
        checks = [
            tf.debugging.assert_equal(
                tf.shape(lengths)[0],
                tf.shape(waveform)[0],
                message="lengths: expected one length per waveform row",
            ),
            tf.debugging.assert_positive(lengths, message="lengths: expected >= 1 sample"),
            tf.debugging.assert_less_equal(
                lengths, width, message="lengths: expected <= the waveform's width"
            ),
        ]
        with tf.control_dependencies(checks):
            return answer(model(features_of_lengths(mfcc, waveform, lengths), training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    stream = stream_endpoint(archive, model, features, answer)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveform")],
    )
    archive.add_endpoint(
        name="serving_lengths",
        fn=serve_lengths,
        input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="waveform"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ],
    )
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    archive.write_out(str(tmp), verbose=False)
    meta = {
        "task": "speech_commands",
        "labels": list(labels),
        "sample_rate": features.sample_rate,
        "features": {k: getattr(features, k) for k in features.__dataclass_fields__},
        "signature": {
            "inputs": {"waveform": "float32 [batch, samples]"},
            "outputs": {"label": "string [batch]", "probabilities": "float32 [batch, classes]"},
        },
        "signatures": {
            "serving_default": {"inputs": ["waveform"]},
            "serving_lengths": {
                "inputs": ["waveform", "lengths"],
                "note": "lengths int32 [batch]: samples of each row; padding beyond is ignored",
            },
        },
        "stream": stream,
        "versions": versions(),
        **metadata,
    }
    (tmp / METADATA).parent.mkdir(parents=True, exist_ok=True)
    (tmp / METADATA).write_text(json.dumps(meta, indent=1))
    if check_waveform is not None:
        served = (
            tf.saved_model.load(str(tmp))
            .signatures["serving_default"](waveform=tf.constant(check_waveform[None], tf.float32))[
                "probabilities"
            ]
            .numpy()
        )
        expected = model(mfcc(check_waveform[None]), training=False).numpy()
        problems = []
        if not np.allclose(served, expected, atol=1e-4):
            problems.append(
                "the reloaded SavedModel's probabilities differ from the Keras model's (max "
                f"difference {np.abs(served - expected).max():.2e})"
            )
        if stream["available"]:
            from data.audio import feature_shape, fit_length

            window = fit_length(  # what serving_default classified: the clip in its window
                check_waveform, feature_shape(features).clip_samples, features.window == "full"
            )
            streamed = run_stream_signature(tmp, window, stream)
            if not np.allclose(streamed, expected, atol=STREAM_TOLERANCE):
                problems.append(
                    "stream_step over the check clip ends with probabilities that differ from "
                    f"serving_default's (max difference {np.abs(streamed - expected).max():.2e})"
                )
        if problems:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExportCheckError("Export check failed: " + "; ".join(problems))
    replace_dir(tmp, out_dir)
    return out_dir


def stream_endpoint(
    archive: keras.export.ExportArchive, model: keras.Model, features: FeatureConfig, answer: Any
) -> dict[str, Any]:
    """Adds ``stream_step`` to ``archive`` if the model is causal; returns its metadata.

    ``stream_step(samples, state_...)``: ``samples`` float32 ``[batch, k * hop]`` (one hop or
    several) and every state tensor -> ``probabilities`` and ``label`` after the last hop,
    ``hop_probabilities`` ``[batch, k, classes]`` after each hop, and the new ``state_...``
    tensors (same names). All state starts at zero.
    """
    from models.streaming import StreamingClassifier, stream_problems

    problems = stream_problems(model, features)
    if problems:
        return {"available": False, "reason": "; ".join(problems)}
    streamer = StreamingClassifier(model, features)
    shapes = streamer.state_shapes()
    names = [f"state_{name}" for name in shapes]

    # XLA fuses the per-frame loop of the recurrent layers: about 5x less time per hop on CPU
    # than the plain graph (the checks stay outside: XLA does not compile assertions).
    compiled = tf.function(streamer.step, jit_compile=True)

    def step(samples: tf.Tensor, *state: tf.Tensor) -> dict[str, tf.Tensor]:
        check = tf.debugging.assert_equal(
            tf.math.floormod(tf.shape(samples)[1], streamer.hop),
            0,
            message=f"samples: expected float32 [batch, k * {streamer.hop}] (whole hops)",
        )
        # the state comes back from the caller: a NaN or a row count other than the samples'
        # would broadcast or spread into every later answer instead of failing here
        checks = [check]
        for name, value in zip(names, state, strict=True):
            checks += [
                tf.debugging.assert_all_finite(
                    value,
                    message=f"{name} contains NaN or Inf: expected the finite state a "
                    "previous step returned (zeros to start)",
                ),
                tf.debugging.assert_equal(
                    tf.shape(value)[0],
                    tf.shape(samples)[0],
                    message=f"{name}: expected one row per row of samples",
                ),
            ]
        with tf.control_dependencies(checks):
            samples = check_waveform_input(samples)
            state = tuple(tf.identity(value) for value in state)
        per_hop, new = compiled(samples, dict(zip(shapes, state, strict=True)))
        return {
            **answer(per_hop[:, -1]),
            "hop_probabilities": per_hop,
            **{f"state_{k}": v for k, v in new.items()},
        }

    archive.add_endpoint(
        name="stream_step",
        fn=step,
        input_signature=[tf.TensorSpec([None, None], tf.float32, name="samples")]
        + [
            tf.TensorSpec([None, *shape], tf.float32, name=name)
            for name, shape in zip(names, shapes.values(), strict=True)
        ],
    )
    return {
        "available": True,
        "signature": "stream_step",
        "hop_samples": streamer.hop,
        "hop_seconds": streamer.hop / features.sample_rate,
        "window_frames": streamer.shape.max_frames,
        "state": [
            {"name": name, "shape": [None, *shape], "dtype": "float32", "initial": 0.0}
            for name, shape in zip(names, shapes.values(), strict=True)
        ],
        "note": "feed samples [batch, k*hop_samples]; pass each state_* output back in; "
        "hop_probabilities [batch, k, classes] are the answers after each hop",
    }


def run_stream_signature(export_dir: Path, waveform: np.ndarray, stream: dict) -> np.ndarray:
    """Runs a SavedModel's ``stream_step`` hop by hop over one waveform; final probabilities."""
    step = tf.saved_model.load(str(export_dir)).signatures["stream_step"]
    state = {s["name"]: tf.zeros([1, *s["shape"][1:]], tf.float32) for s in stream["state"]}
    hop = stream["hop_samples"]
    out: dict[str, tf.Tensor] = {}
    for start in range(0, waveform.size - hop + 1, hop):
        out = step(samples=tf.constant(waveform[None, start : start + hop], tf.float32), **state)
        state = {name: out[name] for name in state}
    return out["probabilities"].numpy()


def export_translator(
    model: keras.Model,
    text: Any,
    decode: Any,
    source_vocabulary: list[str],
    target_vocabulary: list[str],
    out_dir: Path,
    metadata: dict[str, Any],
    check_sentences: list[str] | None = None,
    codecs: tuple[Any, Any] | None = None,
) -> Path:
    """Writes a SavedModel whose ``serving_default`` translates raw sentences.

    Signature: ``text`` string ``[batch]`` -> ``translation`` string ``[batch]``. Standardization,
    tokenization (Keras ``TextVectorization`` with the project's splitter), decoding (greedy or
    beam, as ``decode`` says) and detokenization all run in the graph; the vocabularies are
    shipped in ``assets.extra/``. A second signature, ``attention``, decodes greedily and returns
    ``translation``, ``source_tokens`` ``[batch, s]``, ``target_tokens`` ``[batch, t]`` (up to
    ``[END]``; both padded with ``""``) and the attention ``weights`` ``[batch, t, s]``.

    Args:
        model: a trained ``models.seq2seq.Translator``.
        text: the ``TextConfig`` the model was trained with.
        decode: the ``DecodeConfig`` (beam width, length penalty, max length).
        source_vocabulary: source tokens by id (id 0 padding, 1 unknown).
        target_vocabulary: target tokens by id.
        out_dir: final location; written to a sibling temporary folder first, then renamed.
        metadata: extra fields for ``assets.extra/metadata.json``.
        check_sentences: if given, the reloaded export must translate them exactly as the
            in-process model does, or the export is refused.
        codecs: the source and target ``data.subword.Codec`` (default: ``text.level``'s word or
            character splitter). A learned subword model is embedded in the graph and also
            shipped as ``assets.extra/SIDE.model``.

    Returns:
        ``out_dir``.
    """
    import functools

    from data.subword import Codec
    from data.text import END_ID, PAD_ID, SPECIALS, standardize
    from models.decoding import decode_ids, greedy_decode, ids_to_tokens

    source_codec, target_codec = codecs or (Codec(text.level), Codec(text.level))
    vectorizer = keras.layers.TextVectorization(
        standardize=functools.partial(standardize, config=text, side="source"),
        split=source_codec.split,
        vocabulary=source_vocabulary[2:],  # TextVectorization adds padding "" and "[UNK]" itself
        ragged=True,
        name="source_vectorizer",
    )
    vectorizer.build((None,))
    if vectorizer.get_vocabulary()[:4] != list(SPECIALS):
        raise RuntimeError(f"Unexpected vocabulary layout {vectorizer.get_vocabulary()[:4]}")
    targets = tf.constant(target_vocabulary)

    def source_ids(text_in: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        ids = tf.cast(vectorizer(text_in).to_tensor(), tf.int32)
        ids = tf.pad(ids, [[0, 0], [0, 1]])  # one padding column: an empty input stays valid
        # Nothing to translate (empty or only spaces) translates to nothing, not to a guess.
        blank = tf.equal(tf.reduce_sum(tf.cast(ids > 0, tf.int32), axis=1), 0)
        return ids, blank

    def serve(text_in: tf.Tensor) -> dict[str, tf.Tensor]:
        ids, blank = source_ids(text_in)
        out = decode_ids(model, ids, decode)
        translation = target_codec.join(ids_to_tokens(out, targets))
        return {"translation": tf.where(blank, tf.constant(""), translation)}

    def attend(text_in: tf.Tensor) -> dict[str, tf.Tensor]:
        """The greedy decode with its attention weights (what a heat map shows)."""
        ids, blank = source_ids(text_in)
        source = source_codec.split(standardize(text_in, text, "source")).to_tensor("")
        out, weights = greedy_decode(model, ids, decode.max_length, decode.allow_unknown)
        # output tokens up to and including [END]: the step that decided to stop attends too
        upto_end = tf.equal(tf.cumsum(tf.cast(tf.equal(out, END_ID), tf.int32), 1, True), 0)
        shown = tf.ragged.boolean_mask(tf.gather(targets, out), upto_end & (out != PAD_ID))
        shown = shown.to_tensor("")
        translation = target_codec.join(ids_to_tokens(out, targets))
        return {
            "translation": tf.where(blank, tf.constant(""), translation),
            "source_tokens": source,
            "target_tokens": shown,
            "weights": weights[:, : tf.shape(shown)[1], : tf.shape(source)[1]],
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(vectorizer)
    for resource in {
        id(r): r for c in (source_codec, target_codec) for r in c.trackables()
    }.values():
        archive.track(resource)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda text: serve(text),
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    archive.add_endpoint(
        name="attention",
        fn=lambda text: attend(text),
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    archive.write_out(str(tmp), verbose=False)
    extra = tmp / METADATA.parent
    extra.mkdir(parents=True, exist_ok=True)
    for name, vocab in (
        ("source_vocab.txt", source_vocabulary),
        ("target_vocab.txt", target_vocabulary),
    ):
        (extra / name).write_text("\n".join(vocab) + "\n", encoding="utf-8")
    for side, codec in (("source", source_codec), ("target", target_codec)):
        if codec.model is not None:
            (extra / f"{side}.model").write_bytes(codec.model)
    meta = {
        "task": "translation",
        "text": {k: getattr(text, k) for k in text.__dataclass_fields__},
        "decode": {k: getattr(decode, k) for k in decode.__dataclass_fields__},
        "signature": {
            "inputs": {"text": "string [batch]"},
            "outputs": {"translation": "string [batch]"},
        },
        "signatures": {
            "serving_default": {"inputs": ["text"]},
            "attention": {
                "inputs": ["text"],
                "outputs": ["translation", "source_tokens", "target_tokens", "weights"],
                "note": "greedy decoding (whatever decode.beam_width is): source_tokens "
                "[batch, s] and target_tokens [batch, t] (up to [END]) padded with '', "
                "weights float32 [batch, t, s] (zeros without attention)",
            },
        },
        "versions": versions(),
        **metadata,
    }
    (tmp / METADATA).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    if check_sentences:
        served = tf.saved_model.load(str(tmp)).signatures["serving_default"](
            text=tf.constant(check_sentences)
        )["translation"]
        expected = serve(tf.constant(check_sentences))["translation"]
        got = [s.decode("utf-8") for s in served.numpy()]
        want = [s.decode("utf-8") for s in expected.numpy()]
        if got != want:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExportCheckError(
                f"Export check failed: the reloaded SavedModel translates {got!r}, the Keras "
                f"model {want!r}"
            )
    replace_dir(tmp, out_dir)
    return out_dir
