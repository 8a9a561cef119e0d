"""Streaming: the causal front end, stream_step parity with the window model, TFLite files."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from data.audio import FeatureConfig, feature_shape, mfcc
from models.classifier import ModelConfig, build_classifier
from models.features import MfccLayer
from models.streaming import StreamingClassifier, stream_problems

RATE = 8000


def _features(**kwargs) -> FeatureConfig:
    base = dict(
        sample_rate=RATE,
        clip_seconds=0.5,
        deltas=1,
        normalize="running",
        window="full",
        streaming=True,
    )
    return FeatureConfig(**{**base, **kwargs})


def _model(features: FeatureConfig, prior_frames: int = 0, **model_kwargs) -> keras.Model:
    config = ModelConfig(**{"units": 16, "layers": 2, "pooling": "mean", **model_kwargs})
    model = build_classifier(
        config,
        3,
        features.n_mfcc,
        deltas=features.deltas,
        running_mean=features.normalize in ("running", "running_var"),
        running_var=features.normalize == "running_var",
        causal=features.streaming,
        window_frames=feature_shape(features).max_frames,
        prior_frames=prior_frames,
        n_mels=features.n_mels,
        use_cudnn=False,
        seed=0,
    )
    rng = np.random.default_rng(1)
    model.get_layer("normalization").adapt([MfccLayer(features)(_clips(rng, 4, features))])
    if config.pooling == "attention":  # untrained it is zero (mean pooling): give it scores
        pool = model.get_layer("attention_pool")
        pool.kernel.assign(rng.normal(0, 3.0, pool.kernel.shape).astype(np.float32))
    return model


def _clips(rng: np.random.Generator, n: int, features: FeatureConfig, windows: int = 1):
    samples = feature_shape(features).clip_samples * windows
    t = np.arange(samples) / RATE
    tone = np.sin(2 * np.pi * rng.uniform(200, 2000, (n, 1)) * t)
    return (0.3 * tone * (t < 0.3) + rng.normal(0, 0.01, (n, samples))).astype(np.float32)


@pytest.mark.parametrize(
    ("cell", "pooling", "deltas", "normalize", "prior", "freq"),
    [
        ("lstm", "mean", 1, "running", 0, ()),
        ("gru", "last", 2, "global", 0, ()),
        ("simple_rnn", "mean", 0, "running", 0, ()),
        ("gru", "mean", 1, "running", 20, ()),  # the running mean starts from a prior
        ("gru", "max", 1, "running", 20, ()),
        ("lstm", "max", 0, "global", 0, ()),
        ("gru", "attention", 1, "running", 20, ()),
        ("lstm", "attention", 0, "global", 0, ()),
        ("gru", "mean", 1, "running_var", 20, ()),  # and divides by the running deviation
        ("lstm", "last", 2, "running_var", 0, ()),
        ("gru", "mean", 1, "running", 20, (4, 6)),  # convolutions along frequency first
        ("lstm", "last", 0, "global", 0, (3,)),
    ],
)
def test_stream_step_hop_by_hop_matches_the_window_model(
    cell, pooling, deltas, normalize, prior, freq
):
    features = _features(deltas=deltas, normalize=normalize)
    model = _model(features, prior_frames=prior, cell=cell, pooling=pooling, freq_filters=freq)
    if prior:
        assert np.abs(model.get_layer("normalization").prior.numpy()).max() > 0  # adapted
    clips = _clips(np.random.default_rng(0), 3, features)
    expected = model(MfccLayer(features)(clips), training=False).numpy()
    streamer = StreamingClassifier(model, features)
    per_hop, _ = streamer.run(clips, hops=1)
    assert per_hop.shape[1] == feature_shape(features).max_frames  # one output per hop
    np.testing.assert_allclose(per_hop[:, -1].numpy(), expected, atol=1e-5)
    # several hops per call: the same computation, fewer calls
    per_block, _ = streamer.run(clips, hops=5)
    np.testing.assert_allclose(per_block.numpy(), per_hop[:, 4::5].numpy(), atol=1e-5)


def test_streaming_front_end_matches_librosa_and_never_looks_ahead():
    features = _features()
    clip = _clips(np.random.default_rng(2), 1, features)[0]
    graph = MfccLayer(features)(clip[None]).numpy()[0]
    np.testing.assert_allclose(graph, mfcc(clip, features), atol=1e-3)
    # changing the future leaves the past frames unchanged (no look-ahead)
    later = clip.copy()
    later[2000:] = 0.5
    cut = 2000 // feature_shape(features).hop_length
    np.testing.assert_array_equal(MfccLayer(features)(later[None]).numpy()[0, :cut], graph[:cut])


def test_a_non_causal_model_is_refused_naming_each_setting():
    features = FeatureConfig(normalize="utterance")
    model = build_classifier(ModelConfig(bidirectional=True, units=8), 3, 13)
    problems = " ".join(stream_problems(model, features))
    for setting in ("features.streaming", "features.normalize", "model.bidirectional"):
        assert setting in problems
    with pytest.raises(ValueError, match="model.bidirectional"):
        StreamingClassifier(model, features)


def test_export_has_a_stream_step_signature_described_in_metadata(tmp_path):
    from models.export import METADATA, export_speech_classifier

    features = _features()
    model = _model(features)
    clip = _clips(np.random.default_rng(3), 1, features)[0]
    export_speech_classifier(model, features, ["a", "b", "c"], tmp_path / "e", {}, clip)
    meta = json.loads((tmp_path / "e" / METADATA).read_text())
    stream = meta["stream"]
    assert stream["available"] and stream["hop_samples"] == 80
    names = [s["name"] for s in stream["state"]]
    assert names[:2] == ["state_samples", "state_frames"] and "state_lstm_1_c" in names
    loaded = tf.saved_model.load(str(tmp_path / "e"))
    state = {s["name"]: tf.zeros([1, *s["shape"][1:]]) for s in stream["state"]}
    # two calls of two hops each and one call of four hops agree
    x = tf.constant(clip[None, :320])
    first = loaded.signatures["stream_step"](samples=x[:, :160], **state)
    second = loaded.signatures["stream_step"](samples=x[:, 160:], **{k: first[k] for k in state})
    once = loaded.signatures["stream_step"](samples=x, **state)
    np.testing.assert_allclose(second["probabilities"], once["probabilities"], atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="whole hops"):
        loaded.signatures["stream_step"](samples=x[:, :100], **state)
    # a state handed back wrong fails here, not in every later answer
    broken = {**state, "state_frames": state["state_frames"] + float("nan")}
    with pytest.raises(tf.errors.InvalidArgumentError, match="state_frames contains NaN"):
        loaded.signatures["stream_step"](samples=x, **broken)
    two_rows = tf.concat([x, x], axis=0)  # samples of two streams, the state of one
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per row of samples"):
        loaded.signatures["stream_step"](samples=two_rows, **state)


def test_export_of_a_bidirectional_model_says_why_it_cannot_stream(tmp_path):
    from models.export import METADATA, export_speech_classifier

    features = _features()
    model = _model(features, bidirectional=True)
    export_speech_classifier(model, features, ["a", "b", "c"], tmp_path / "e", {})
    stream = json.loads((tmp_path / "e" / METADATA).read_text())["stream"]
    assert not stream["available"] and "model.bidirectional" in stream["reason"]


def _tone_classes(rng: np.random.Generator, n: int, features: FeatureConfig):
    """Clips of a tone in one of three bands; the band is the label."""
    labels = rng.integers(0, 3, n)
    freqs = np.array([400.0, 1000.0, 2000.0])[labels] * rng.uniform(0.9, 1.1, n)
    samples = feature_shape(features).clip_samples
    t = np.arange(samples) / RATE
    start = rng.uniform(0, 0.2, (n, 1))
    on = (t >= start) & (t < start + 0.25)
    tone = 0.3 * np.sin(2 * np.pi * freqs[:, None] * t) * on
    return (tone + rng.normal(0, 0.01, (n, samples))).astype(np.float32), labels


def _tone_model(features: FeatureConfig, **model_kwargs):  # noqa: ANN202
    """A small model trained on ``_tone_classes``: ``(model, train clips, test clips, truth)``."""
    keras.utils.set_random_seed(0)  # the same small model whatever ran before
    model = _model(features, **model_kwargs)
    rng = np.random.default_rng(4)
    train, train_labels = _tone_classes(rng, 48, features)
    front = MfccLayer(features)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(front(train), train_labels, epochs=25, batch_size=16, verbose=0)
    clips, truth = _tone_classes(rng, 12, features)
    return model, train, clips, truth


def _tone_export(folder, features: FeatureConfig, quantize: str, **model_kwargs):  # noqa: ANN001, ANN202
    """``_tone_model`` exported to TFLite in ``folder``: ``(model, reference, clips, metadata)``.

    ``reference`` is the Keras model on raw samples, the answers the files must match.
    """
    from models.tflite import export_tflite

    model, train, clips, truth = _tone_model(features, **model_kwargs)
    front = MfccLayer(features)

    def reference(x):  # noqa: ANN001, ANN202
        return model(front(x), training=False).numpy()

    meta = export_tflite(
        model,
        features,
        ["low", "mid", "high"],
        folder,
        quantize,
        calibration=list(train[:8]),
        check_clips=list(zip(clips, truth, strict=True)),
        reference=reference,
    )
    return model, reference, clips, meta


def test_classify_tflite_answers_a_short_clip_as_if_it_were_alone(tmp_path):
    """With ``window: masked``, zero padding changes answers; ``classify_lengths`` ignores it."""
    from models.serving import load_speech_model

    features = _features(window="masked")
    model, reference, clips, meta = _tone_export(tmp_path / "tflite", features, "none")
    front = MfccLayer(features)
    assert meta["parity"]["classify_lengths"]["max_abs_difference"] <= 1e-4
    assert meta["classify"]["lengths"]["signature"] == "classify_lengths"
    lengths = np.array([1200, 2000, 2500, 3999])
    pairs = list(zip(clips[:4], lengths, strict=True))
    batch = np.stack([np.where(np.arange(c.size) < n, c, 0) for c, n in pairs])
    alone = np.concatenate([reference(c[None, :n]) for c, n in pairs])
    loaded = load_speech_model(tmp_path / "tflite")
    np.testing.assert_allclose(loaded.classify(batch, lengths), alone, atol=1e-4)
    # without the lengths the padding is heard: the test above is not vacuous
    padded = reference(batch)
    assert np.abs(padded - alone).max() > 1e-3
    np.testing.assert_allclose(loaded.classify(batch), padded, atol=1e-4)
    # a batch narrower than the window, as serving_default hears it: each row as wide as the batch
    narrow = clips[:3, :2500]
    np.testing.assert_allclose(loaded.classify(narrow), reference(narrow), atol=1e-4)
    # what serving_lengths refuses, refused here too
    for bad in ([0, 100], [100, 3001], [-5, 100], [100], [1.5, 100]):
        with pytest.raises(ValueError, match=r"lengths .*one per row.*3000"):
            loaded.classify(clips[:2, :3000], np.array(bad))
    # a length of the whole window goes through classify, as serving_lengths would answer it
    whole = clips[:2]
    np.testing.assert_allclose(
        loaded.classify(whole, np.array([whole.shape[1]] * 2)),
        model(front(whole), training=False).numpy(),
        atol=1e-4,
    )
    # a classify.tflite from before classify_lengths: the padded window, not an error
    from models.tflite import _classify_fn, _convert

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="classify",
        fn=_classify_fn(model, MfccLayer(features, name="mfcc")),
        input_signature=[tf.TensorSpec([1, clips.shape[1]], tf.float32, name="waveform")],
    )
    archive.write_out(str(tmp_path / "sm"), verbose=False)
    old = _convert(tmp_path / "sm", ["classify"], "none", None)
    (tmp_path / "tflite" / "classify.tflite").write_bytes(old)
    np.testing.assert_allclose(
        load_speech_model(tmp_path / "tflite").classify(batch, lengths), padded, atol=1e-4
    )
    with pytest.raises(TypeError, match="list of names"):
        _convert(tmp_path / "sm", "classify", "none", None)


@pytest.mark.parametrize(
    ("quantize", "pooling", "normalize", "freq"),
    [
        ("none", "mean", "running", ()),
        ("dynamic", "mean", "running", ()),
        ("none", "mean", "running", (4, 6)),  # convolutions along frequency first
        ("int8", "mean", "running", (4, 6)),
        ("none", "max", "running", ()),
        ("none", "attention", "running", ()),
        ("none", "mean", "running_var", ()),
        ("int8", "mean", "running_var", ()),  # its state's mean square in the int8 stream too
    ],
)
def test_tflite_files_run_in_the_interpreter_and_match_the_model(
    tmp_path, quantize, pooling, normalize, freq
):
    from models.serving import load_speech_model

    features = _features(normalize=normalize)
    _, reference, clips, meta = _tone_export(
        tmp_path / "tflite", features, quantize, pooling=pooling, freq_filters=freq
    )
    assert sorted(meta["bytes"]) == ["classify.tflite", "stream_step.tflite"]
    parity = meta["parity"]
    assert parity["failures"] == [] and parity["savedmodel_accuracy"] >= 0.9
    # a window-filling model hears a short clip padded anyway: no classify_lengths signature
    assert "classify_lengths" not in parity and "lengths" not in meta["classify"]
    for name in ("classify", "stream_step"):
        if quantize == "none":
            assert parity[name]["max_abs_difference"] <= 1e-4
        else:
            assert parity[name]["accuracy"] >= parity["savedmodel_accuracy"] - 0.01
            assert parity[name]["accuracy"] >= parity[name]["savedmodel_accuracy"] - 0.01
    assert meta["latency_ms"]["stream_ms"] > 0
    # builtin ops only: the plain interpreter runs both files through the serving interface
    loaded = load_speech_model(tmp_path / "tflite" / "classify.tflite")
    got = loaded.classify(clips[:4])
    streamed = loaded.stream().push(clips[0])[0, -1]
    tolerance = 1e-4 if quantize == "none" else 0.2
    np.testing.assert_allclose(got, reference(clips[:4]), atol=tolerance)
    np.testing.assert_allclose(streamed, reference(clips[:1])[0], atol=tolerance)
    _steps_by_tensor_index_as_by_signature(tmp_path / "tflite", meta, clips[0])
    _bookkeeping_stays_float(tmp_path / "tflite", meta, clips[0])


def _bookkeeping_stays_float(folder, meta, clip):  # noqa: ANN001, ANN202
    """Whatever the quantization, the stream's carried samples and frame count stay exact.

    Quantized with the rest (as ``int8`` once was), the count drifted when fed back hop by hop
    (1.08, 1.98, 2.89, ...) and the samples were clipped to the calibration audio's range.
    """
    from models.tflite import interpreter

    hop = meta["stream"]["hop_samples"]
    runner = interpreter(folder / "stream_step.tflite").get_signature_runner("stream_step")
    state = {s["name"]: np.zeros(s["shape"], np.float32) for s in meta["stream"]["state"]}
    loud = (clip / np.abs(clip).max()).astype(np.float32)  # louder than any calibration clip
    if meta["stream"]["quantize"] == "int8":  # quantized where it should be, float elsewhere
        lite = interpreter(folder / "stream_step.tflite")
        int8 = [d["name"] for d in lite.get_tensor_details() if d["dtype"] == np.int8]
        assert any("quantizable" in name and "cell" in name for name in int8)  # the cells
        assert not any(name.startswith(("frame", "rfft", "Log")) for name in int8)
        outputs = lite.get_signature_runner("stream_step").get_output_details().values()
        assert all(d["dtype"] == np.float32 for d in outputs)
    hops = 30
    for start in range(0, hops * hop, hop):
        out = runner(samples=loud[None, start : start + hop], **state)
        state = {name: out[name] for name in state}
    assert state["state_frames"][0, 0] == hops
    kept = state["state_samples"].shape[1]
    np.testing.assert_array_equal(state["state_samples"][0], loud[hops * hop - kept : hops * hop])


def _steps_by_tensor_index_as_by_signature(folder, meta, clip):  # noqa: ANN001, ANN202
    """A client without signature support (TFLite Micro) follows metadata's tensor indices."""
    from models.tflite import interpreter

    stream, hop = meta["stream"], meta["stream"]["hop_samples"]
    table = stream["tensors"]
    assert {t["name"] for t in table["inputs"]} == {"samples"} | {
        s["name"] for s in stream["state"]
    }
    for spec in stream["state"]:  # the state contract and the table agree on every tensor
        (row,) = [t for t in table["inputs"] if t["name"] == spec["name"]]
        assert row["shape"] == spec["shape"] and row["dtype"] == "float32"
    raw = interpreter(folder / "stream_step.tflite")
    runner = interpreter(folder / "stream_step.tflite").get_signature_runner("stream_step")
    state = {s["name"]: np.zeros(s["shape"], np.float32) for s in stream["state"]}
    by_name = {t["name"]: t for t in table["outputs"]}
    for start in range(0, 5 * hop, hop):
        samples = clip[None, start : start + hop].astype(np.float32)
        want = runner(samples=samples, **state)
        for row in table["inputs"]:
            raw.set_tensor(
                row["index"], samples if row["name"] == "samples" else state[row["name"]]
            )
        raw.invoke()
        got = {name: raw.get_tensor(row["index"]) for name, row in by_name.items()}
        for name, value in want.items():
            np.testing.assert_array_equal(got[name], value)
        state = {name: want[name] for name in state}  # the step's new state, fed back


def test_a_bidirectional_export_refuses_to_stream_naming_the_setting(tmp_path):
    from models.export import export_speech_classifier
    from models.serving import ExportError, load_speech_model

    features = _features()
    export_speech_classifier(
        _model(features, bidirectional=True), features, ["a", "b", "c"], tmp_path / "e", {}
    )
    with pytest.raises(ExportError, match="model.bidirectional"):
        load_speech_model(tmp_path / "e").stream()


STREAMING = [
    "features.streaming=true",
    "features.normalize=running",
    "model.bidirectional=false",
]


def test_cli_streaming_run_exports_tflite_and_detects_in_a_stream(tmp_path):
    import soundfile

    from tests.test_cli import TINY, run_cli

    run_dir = tmp_path / "run"
    sets = [*TINY, *STREAMING, f"runtime.cache_dir={tmp_path / 'cache'}"]
    run_cli(
        "run",
        "speech_commands",
        "--run-dir",
        str(run_dir),
        *[a for s in sets for a in ("--set", s)],
    )
    meta = json.loads((run_dir / "export" / "assets.extra" / "metadata.json").read_text())
    assert meta["stream"]["available"]
    exported = run_cli("export", str(run_dir), "--format", "tflite")
    tflite = run_dir / "export" / "tflite"
    assert exported.stdout.strip() == str(tflite)  # the folder alone, for scripts
    # the check's figures, one line per file, on stderr
    assert "classify.tflite (" in exported.stderr and "stream_step.tflite (" in exported.stderr
    assert "against the SavedModel's" in exported.stderr
    report = json.loads((tflite / "metadata.json").read_text())
    assert report["top_k"] == meta["top_k"]  # predict prints as many alternatives from both
    assert report["parity"]["classify"]["max_abs_difference"] <= 1e-4
    assert report["parity"]["stream_step"]["max_abs_difference"] <= 1e-4
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tflite"]["bytes"] == report["bytes"]
    # evaluate measured detect --stream on the same recording as the sliding window
    sliding, streamed = metrics["stream"], metrics["stream"]["stream_step"]
    assert streamed["commands"] == sliding["commands"] > 0
    assert 0 <= streamed["recall"] <= 1 and streamed["seconds"] == sliding["seconds"]

    clips = json.loads((run_dir / "stages" / "ingest" / "clips.json").read_text())
    test = [c["path"] for c in clips if c["split"] == "test"][:4]
    predicted = run_cli("predict", str(tflite / "classify.tflite"), *test)
    answers = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [a["input"] for a in answers] == test and all("label" in a for a in answers)
    assert predicted.stderr == ""  # LiteRT's start-up INFO lines are silenced

    rate = meta["sample_rate"]
    pieces = []
    for path in test:
        y, _ = soundfile.read(path, dtype="float32")
        pieces += [np.zeros(rate, np.float32), y]
    recording = tmp_path / "long.wav"
    soundfile.write(recording, np.concatenate(pieces), rate)
    for mode in (["--stream"], []):
        answers = []
        for export in (run_dir / "export", tflite):
            found = run_cli("detect", *mode, "--threshold", "0.3", str(export), str(recording))
            assert found.stderr == ""  # no start-up logs, no progress bar off a terminal
            events = [json.loads(line) for line in found.stdout.splitlines()]
            for event in events:
                assert set(event) == {"file", "label", "start", "end", "score"}
                assert event["label"] in meta["labels"] and event["label"] not in (
                    "_silence_",
                    "_unknown_",
                )
            answers.append([(e["label"], e["start"], e["end"]) for e in events])
        assert answers[0] == answers[1], mode  # the TFLite files find what the SavedModel does
    bad = run_cli("detect", "--stream", str(tmp_path), str(recording), check=False)
    assert bad.returncode == 2 and "not an export" in bad.stderr
    renamed = tflite / "model.tflite"
    renamed.write_bytes((tflite / "classify.tflite").read_bytes())
    refused = run_cli("predict", str(renamed), *test, check=False)
    assert refused.returncode == 2 and "classify.tflite" in refused.stderr
    (tflite / "stream_step.tflite").unlink()
    missing = run_cli("detect", "--stream", str(tflite), str(recording), check=False)
    assert missing.returncode == 2 and "no stream_step.tflite" in missing.stderr


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stream_evaluation_measures_detect_stream_for_a_causal_model_only(bidirectional):
    from models.evaluation import stream_metrics

    features = _features()
    model = _model(features, bidirectional=bidirectional)
    clips = [
        (c[:3000], "abc"[i % 3])
        for i, c in enumerate(_clips(np.random.default_rng(5), 6, features))
    ]
    report = stream_metrics(model, clips, ["a", "b", "c"], features, [], seed=0, max_clips=6)
    assert report["commands"] == 6
    if bidirectional:
        assert "stream_step" not in report
    else:
        assert report["stream_step"]["commands"] == 6
        assert report["stream_step"]["seconds"] == report["seconds"]


def test_dynamic_quantization_leaves_the_mfcc_front_end_in_float(tmp_path):
    from models.tflite import _convert, interpreter

    features = _features(sample_rate=16000)  # 512-point FFT: a 257 x 40 mel filter bank
    front = MfccLayer(features)
    samples = feature_shape(features).clip_samples

    class Front(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, samples], tf.float32, name="waveform")])
        def classify(self, waveform):
            return {"mfcc": front(waveform)}

    module = Front()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"classify": module.classify})
    (tmp_path / "front.tflite").write_bytes(
        _convert(tmp_path / "sm", ["classify"], "dynamic", None)
    )
    x = (np.random.default_rng(6).normal(0, 0.05, (1, samples))).astype(np.float32)
    got = interpreter(tmp_path / "front.tflite").get_signature_runner("classify")(waveform=x)
    np.testing.assert_allclose(got["mfcc"], front(x).numpy(), atol=1e-3)


def test_stream_step_matches_the_window_model_on_real_fsdd_clips():
    from data.audio import fit_length, load_audio
    from tests.conftest import shared_path

    folder = shared_path("fsdd", "recordings")
    # the fsdd preset's front end (8 kHz, 2-s window, 10 MFCC, deltas, running CMN with a prior)
    features = _features(clip_seconds=2.0, n_mfcc=10, running_prior_seconds=1.0)
    window = feature_shape(features).clip_samples
    clips = np.stack(
        [
            fit_length(load_audio(str(folder / name), RATE), window, full=True)
            for name in ("3_george_7.wav", "7_lucas_12.wav", "0_yweweler_40.wav")
        ]
    )
    np.testing.assert_allclose(  # librosa and the graph agree on real speech too
        MfccLayer(features)(clips[:1]).numpy()[0], mfcc(clips[0], features), atol=1e-3
    )
    model = _model(features, prior_frames=100, cell="gru")
    expected = model(MfccLayer(features)(clips), training=False).numpy()
    streamed, _ = StreamingClassifier(model, features).run(clips, hops=40)
    np.testing.assert_allclose(streamed[:, -1].numpy(), expected, atol=1e-5)


def test_an_export_with_frequency_convolutions_batches_and_streams_like_the_clip_alone(tmp_path):
    from models.export import export_speech_classifier

    features = _features()
    model = _model(features, freq_filters=(4, 6))
    rng = np.random.default_rng(5)
    clips = _clips(rng, 4, features)
    export_speech_classifier(model, features, ["a", "b", "c"], tmp_path / "e", {}, clips[0])
    loaded = tf.saved_model.load(str(tmp_path / "e"))
    alone, batched = loaded.signatures["serving_default"], loaded.signatures["serving_lengths"]
    lengths = [4000, 2500, 1200, 3300]  # a padded batch of mixed lengths, as a client sends it
    out = batched(waveform=tf.constant(clips), lengths=tf.constant(lengths, tf.int32))
    for row, size in enumerate(lengths):
        single = alone(waveform=tf.constant(clips[row : row + 1, :size]))["probabilities"]
        np.testing.assert_allclose(out["probabilities"][row], single[0], atol=1e-4)
    # the stream, fed the whole window hop by hop in one call, ends where the window model does
    meta_state = StreamingClassifier(model, features).initial_state()
    state = {f"state_{k}": v for k, v in meta_state.items()}
    streamed = loaded.signatures["stream_step"](samples=tf.constant(clips[:1]), **state)
    window = alone(waveform=tf.constant(clips[:1]))["probabilities"].numpy()[0]
    np.testing.assert_allclose(streamed["probabilities"].numpy()[0], window, atol=1e-4)
    np.testing.assert_allclose(streamed["hop_probabilities"].numpy()[0, -1], window, atol=1e-4)
