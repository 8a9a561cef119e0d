"""End to end through the real command line on tiny generated data, then the export and predict."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.conftest import ROOT

TINY = [
    "data.synthetic.voices=6",
    "data.synthetic.takes=2",
    "data.synthetic.words=[yes, no, up]",
    "data.synthetic.unknown_takes=1",
    "augment.copies=1",
    "model.units=16",
    "model.pooling=mean",
    "optimizer.learning_rate=0.005",
    "train.epochs=3",
    "train.batch_size=16",
    "detect.threshold=0.6",  # the export's own detector setting (RecognizeCommands' is 0.7)
    "detect.stream_threshold=null",  # and --stream's too (the preset has one of its own)
]


def run_cli(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def tiny_args(run_dir: Path, cache: Path) -> list[str]:
    sets = [*TINY, f"runtime.cache_dir={cache}"]
    return ["run", "speech_commands", "--run-dir", str(run_dir)] + [
        a for s in sets for a in ("--set", s)
    ]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("e2e")
    run_dir, cache = root / "run", root / "cache"
    return run_dir, cache, run_cli(*tiny_args(run_dir, cache))


def test_run_writes_every_output(tiny_run):
    run_dir, _, result = tiny_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert set(metrics["examples"]) == {"train", "validation", "test"}
    assert metrics["rejected"] == {"ingest": 0, "features": 0}
    assert set(metrics["stage_seconds"]) == {"ingest", "features", "train", "evaluate", "export"}
    assert set(metrics["per_class"]) == {"yes", "no", "up", "_unknown_", "_silence_"}
    grads = metrics["gradients"]
    assert grads["steps_recorded"] > 0 and grads["first_nonfinite_step"] is None
    assert set(grads["layers"]) == {"lstm_0", "lstm_1", "probabilities"}  # preset: causal LSTM x2
    assert isinstance(metrics["gradient_warnings"], list)
    assert "recall" in metrics["stream"] and "recall" in metrics["stream"]["stream_step"]
    for path in (
        "config.yaml",
        "gradients.csv",
        "plots/gradients.png",
        "plots/training.png",
        "plots/confusion_matrix.png",
        "export/saved_model.pb",
        "export/assets.extra/metadata.json",
    ):
        assert (run_dir / path).is_file(), path
    assert any((run_dir / "logs").rglob("events.out.tfevents*"))
    assert "test accuracy" in result.stdout and str(run_dir) in result.stdout
    with open(next((run_dir / "checkpoints").glob("*/history.csv")), newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 3 and losses[-1] < losses[0]  # it learns


def test_rerun_reuses_every_stage(tiny_run):
    run_dir, cache, _ = tiny_run
    result = run_cli(*tiny_args(run_dir, cache))
    assert result.stderr.count("reusing stage") == 5, result.stderr
    assert "running stage" not in result.stderr


def test_predict_prints_one_json_line_per_file(tiny_run, tmp_path):
    run_dir, _, _ = tiny_run
    clips = json.loads((run_dir / "stages" / "ingest" / "clips.json").read_text())
    clip = next(c for c in clips if c["split"] == "test" and c["label"] == "yes")
    y, sr = soundfile.read(clip["path"], dtype="float32")
    import librosa

    resampled = tmp_path / "at_8k.wav"
    soundfile.write(resampled, librosa.resample(y, orig_sr=sr, target_sr=8000), 8000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"nope")
    result = run_cli(
        "predict", str(run_dir / "export"), clip["path"], str(resampled), str(broken), check=False
    )
    assert result.returncode == 1  # one input failed
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(lines) == 3
    labels = {"yes", "no", "up", "_unknown_", "_silence_"}
    for line in lines[:2]:
        assert line["label"] in labels and len(line["top_k"]) == 3
        assert line["top_k"][0]["label"] == line["label"]
        assert 0 <= line["probability"] <= 1
    assert lines[2]["input"] == str(broken) and "unreadable" in lines[2]["error"]


def test_export_runs_in_plain_tensorflow(tiny_run, tmp_path):
    """Load and serve with only TensorFlow: a fresh interpreter that never imports the project."""
    run_dir, _, _ = tiny_run
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        tf.config.set_visible_devices([], "GPU")
        model = tf.saved_model.load({str(run_dir / "export")!r})
        serve = model.signatures["serving_default"]
        out = {{}}
        for n in (4000, 16000, 40000):
            wave = tf.constant(np.random.default_rng(0).normal(0, 0.1, (2, n)).astype("float32"))
            result = serve(waveform=wave)
            out[n] = [result["label"].dtype.name, result["label"].shape.as_list(),
                      result["probabilities"].shape.as_list()]
        project = [m for m in sys.modules if m.split(".")[0] in ("pipelines", "models", "data")]
        print(json.dumps({{"out": out, "project_modules": project}}))
    """)
    result = subprocess.run(
        [sys.executable, "-I", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ.get("PATH", ""), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["project_modules"] == []
    for shape in report["out"].values():
        assert shape == ["string", [2], [2, 5]]


def test_serving_bad_waveforms_get_a_clear_error_or_a_defined_answer(tiny_run):
    import tensorflow as tf

    run_dir, _, _ = tiny_run
    serve = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="waveform has 0 samples"):
        serve(waveform=tf.zeros([1, 0]))
    nan = np.full((1, 16000), 0.1, np.float32)
    nan[0, 500] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        serve(waveform=tf.constant(nan))
    # wrong rank: TensorFlow's signature binding refuses it, naming the expected shape (its
    # fallback then re-raises as an op error; the first error is the one that explains)
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)) as refused:
        serve(waveform=tf.zeros([16000]))
    chain = f"{refused.value} {refused.value.__context__}"
    assert "TensorSpec(shape=(None, None), dtype=tf.float32, name='waveform')" in chain
    out = serve(waveform=tf.zeros([2, 3]))  # silence, three samples: a defined answer
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-4)


def test_serving_lengths_answers_each_row_as_if_alone(tiny_run):
    import tensorflow as tf

    run_dir, _, _ = tiny_run
    model = tf.saved_model.load(str(run_dir / "export"))
    alone, batched = model.signatures["serving_default"], model.signatures["serving_lengths"]
    clips = json.loads((run_dir / "stages" / "ingest" / "clips.json").read_text())
    rng = np.random.default_rng(0)
    waves = []
    for clip in [c for c in clips if c["split"] == "test"][:10]:
        y = soundfile.read(clip["path"], dtype="float32")[0]
        waves.append(y[: int(rng.integers(3000, y.size + 1))])  # mixed lengths
    padded = np.zeros((len(waves), max(w.size for w in waves) + 4000), np.float32)
    for row, w in enumerate(waves):
        padded[row, : w.size] = w
    out = batched(
        waveform=tf.constant(padded), lengths=tf.constant([w.size for w in waves], tf.int32)
    )["probabilities"].numpy()
    for row, w in enumerate(waves):
        single = alone(waveform=tf.constant(w[None]))["probabilities"].numpy()[0]
        np.testing.assert_allclose(out[row], single, atol=1e-4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="lengths"):
        batched(waveform=tf.constant(padded), lengths=tf.constant([0] * len(waves), tf.int32))


def test_predict_answers_a_long_recording_with_a_time(tiny_run, tmp_path):
    run_dir, _, _ = tiny_run
    clips = json.loads((run_dir / "stages" / "ingest" / "clips.json").read_text())
    clip = next(c for c in clips if c["split"] == "test" and c["label"] == "yes")
    y = soundfile.read(clip["path"], dtype="float32")[0]
    noise = np.random.default_rng(0).normal(0, 0.003, 16000 * 3).astype(np.float32)
    noise[20000 : 20000 + y.size] += y
    path = tmp_path / "three_seconds.wav"
    soundfile.write(path, noise, 16000)
    result = run_cli("predict", str(run_dir / "export"), str(path), clip["path"])
    long_line, short_line = (json.loads(line) for line in result.stdout.splitlines())
    assert {"label", "probability", "top_k", "start", "end"} <= set(long_line)
    if long_line["start"] is not None:  # what a 3-epoch model finds: a span on the word
        assert 0 <= long_line["start"] < long_line["end"] <= 3.0
        assert long_line["start"] < (20000 + y.size) / 16000 and long_line["end"] > 20000 / 16000
    assert "start" not in short_line and short_line["label"] == short_line["top_k"][0]["label"]
    silent = tmp_path / "silent.wav"  # digital silence is an input like any other
    soundfile.write(silent, np.zeros(8000, np.float32), 16000)
    (answer,) = (
        json.loads(line)
        for line in run_cli("predict", str(run_dir / "export"), str(silent)).stdout.splitlines()
    )
    assert answer["label"] in json.loads(
        (run_dir / "stages" / "ingest" / "labels.json").read_text()
    )
    refused = run_cli("predict", str(run_dir / "export"), str(silent), "--top-k", "0", check=False)
    assert (
        refused.returncode == 2 and "--top-k" in refused.stderr and "Received: 0" in refused.stderr
    )


def test_export_matches_training_features(tiny_run):
    """Served probabilities on a raw clip equal the trained model's on the librosa features."""
    import keras
    import tensorflow as tf

    import models.features  # noqa: F401
    from data.audio import FeatureConfig, load_audio, mfcc

    run_dir, _, _ = tiny_run
    meta = json.loads((run_dir / "export" / "assets.extra" / "metadata.json").read_text())
    features = FeatureConfig(**meta["features"])
    model = keras.models.load_model(run_dir / "stages" / "train" / "model.keras")
    serve = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    clips = json.loads((run_dir / "stages" / "ingest" / "clips.json").read_text())
    for clip in [c for c in clips if c["split"] == "test"][:5]:
        y = load_audio(clip["path"], features.sample_rate)
        expected = model(mfcc(y, features)[None]).numpy()
        served = serve(waveform=tf.constant(y[None]))["probabilities"].numpy()
        np.testing.assert_allclose(served, expected, atol=1e-3)


def test_detect_prints_events_and_reports_bad_files(tiny_run, tmp_path):
    run_dir, _, _ = tiny_run
    clips = json.loads((run_dir / "stages" / "ingest" / "clips.json").read_text())
    rng = np.random.default_rng(0)
    parts = []
    for clip in [c for c in clips if c["split"] == "test"][:8]:
        parts += [rng.normal(0, 0.005, 12000).astype(np.float32), soundfile.read(clip["path"])[0]]
    recording = tmp_path / "recording.wav"
    soundfile.write(recording, np.concatenate(parts).astype(np.float32), 16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF nope")
    result = run_cli(
        "detect",
        str(run_dir / "export"),
        str(recording),
        str(broken),
        *("--threshold", "0.2", "--average-ms", "0"),  # a 3-epoch model's posteriors are flat
        check=False,
    )
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1] == {"file": str(broken), "error": lines[-1]["error"]}
    duration = soundfile.info(recording).duration
    assert len(lines) > 1, "nothing found in 8 commands at threshold 0.2"
    for event in lines[:-1]:  # what a 3-epoch model finds; the format and bounds are exact
        assert set(event) == {"file", "label", "start", "end", "score"}
        assert event["label"] in {"yes", "no", "up"} and 0.2 <= event["score"] <= 1
        assert 0 <= event["start"] < event["end"] <= duration
    bad = run_cli(
        "detect", str(run_dir / "export"), str(recording), "--threshold", "2", check=False
    )
    assert bad.returncode == 2 and "threshold" in bad.stderr
    skips = run_cli(
        "detect", str(run_dir / "export"), str(recording), "--hop-ms", "5000", check=False
    )
    assert skips.returncode == 2 and "hop_ms" in skips.stderr and "5000" in skips.stderr
    # without flags: the settings the run's config chose, carried by the export
    meta = json.loads((run_dir / "export" / "assets.extra" / "metadata.json").read_text())
    assert meta["detector"] == {
        "threshold": 0.6,
        "average_ms": 500.0,
        "suppression_ms": 500.0,
        "hop_ms": 100.0,
        "stream_overlap": 2,  # the default preset's
        "stream_threshold": None,
        "stream_average_ms": None,
        "listen_ms": None,
    }
    own = run_cli("detect", str(run_dir / "export"), str(recording))
    scores = [json.loads(line)["score"] for line in own.stdout.splitlines()]
    assert all(score >= 0.6 for score in scores)
    assert len(scores) <= len(lines) - 1  # a stricter threshold than 0.2 finds no more


def test_tune_detector_scores_what_the_evaluate_stage_measures(tiny_run):
    run_dir, _, _ = tiny_run
    result = run_cli(
        *("tune-detector", str(run_dir), "--split", "test", "--seed", "0", "--clips", "200"),
        *("--thresholds", "0.2", "0.6", "0.95", "--average-ms", "500", "--overlaps", "2"),
        *("--listen-ms", "600", "1000", "--max-false-alarms", "1000"),
    )
    sweep = json.loads((run_dir / "detector_sweep.json").read_text())
    # 1000 ms is the tiny run's whole window: listen_ms null
    assert sorted((r["mode"], r["threshold"], r["listen_ms"] or 0) for r in sweep["rows"]) == [
        (mode, threshold, listen)
        for mode in ("sliding", "stream")
        for threshold in (0.2, 0.6, 0.95)
        for listen in (0, 600)
    ]
    # the run's own settings (0.6, 500 ms, 2 runs) on the evaluate stage's recording (seed 0,
    # 200 test clips): the same figures as metrics.json
    stream = json.loads((run_dir / "metrics.json").read_text())["stream"]
    for mode, expected in (("sliding", stream), ("stream", stream["stream_step"])):
        row = next(
            r
            for r in sweep["rows"]
            if r["mode"] == mode and r["threshold"] == 0.6 and r["listen_ms"] is None
        )
        assert row["recall"] == expected["recall"], mode
        assert row["false_alarms_per_minute"] == round(expected["false_alarms_per_hour"] / 60, 3)
    sliding = sweep["chosen"]["sliding"]  # a setting that found nothing is never chosen
    assert sliding["recall"] == max(r["recall"] for r in sweep["rows"] if r["mode"] == "sliding")
    assert sliding["recall"] > 0
    # one span for both modes: --stream's choice is among the rows of the sliding window's span
    span = [r for r in sweep["rows"] if r["listen_ms"] == sliding["listen_ms"]]
    assert sweep["chosen"]["stream"]["recall"] == max(
        r["recall"] for r in span if r["mode"] == "stream"
    )
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["set"] == sweep["set"] and "detect.stream_overlap=2" in printed["set"]
    listen = "null" if sliding["listen_ms"] is None else sliding["listen_ms"]
    assert f"detect.listen_ms={listen}" in printed["set"]


def test_tune_detector_names_what_is_wrong(tmp_path):
    from pipelines.config import ConfigError
    from pipelines.tune_detector import DetectorGrid, tune_detector

    with pytest.raises(FileNotFoundError, match="no trained speech model"):
        tune_detector(tmp_path, "validation", 10, 0, DetectorGrid())
    with pytest.raises(ConfigError, match="--thresholds"):
        DetectorGrid(thresholds=(1.5,))
    with pytest.raises(ConfigError, match="--overlaps"):
        DetectorGrid(overlaps=(1,))
    with pytest.raises(ConfigError, match="--listen-ms"):
        DetectorGrid(listen_ms=(0,))
    with pytest.raises(
        ConfigError, match=r"--average-ms: expected finite values. Received: \(inf,\)"
    ):
        DetectorGrid(average_ms=(float("inf"),))
    with pytest.raises(ConfigError, match="--clips: expected at least 1. Received: 0"):
        tune_detector(tmp_path, "validation", 0, 0, DetectorGrid())


def test_deleted_export_is_made_again(tiny_run):
    import shutil

    run_dir, cache, _ = tiny_run
    shutil.rmtree(run_dir / "export")
    result = run_cli(*tiny_args(run_dir, cache))
    assert "running stage export (output export is missing or changed)" in result.stderr
    assert result.stderr.count("reusing stage") == 4
    assert (run_dir / "export" / "saved_model.pb").is_file()


def test_export_command_rewrites_export(tiny_run):
    run_dir, _, _ = tiny_run
    before = (run_dir / "export" / "saved_model.pb").stat().st_mtime_ns
    result = run_cli("export", str(run_dir))
    assert (run_dir / "export" / "saved_model.pb").stat().st_mtime_ns != before
    assert result.stderr.count("reusing stage") == 4


def test_help_list_and_config_errors():
    assert "predict" in run_cli("--help").stdout
    listing = run_cli("list").stdout
    assert "speech_commands" in listing and "fsdd" in listing and "lstm" in listing
    assert "multi_worker" in listing
    bad = run_cli("run", "speech_commands", "--set", "train.epoch=2", check=False)
    assert bad.returncode == 2 and "Unknown config key 'train.epoch'" in bad.stderr
    bad = run_cli("run", "nope", check=False)
    assert bad.returncode == 2 and "Unknown pipeline or preset 'nope'" in bad.stderr
