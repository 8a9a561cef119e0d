"""The translation pipeline end to end through the real command line, on tiny generated data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_cli import run_cli

TINY = [
    "data.synthetic.examples=400",
    "data.val_percent=10",
    "data.test_percent=10",
    "model.units=16",
    "model.embedding_dim=16",
    "train.epochs=2",
    "train.batch_size=32",
    "decode.beam_width=2",
    "decode.max_length=12",
    "eval.attention_plots=2",
]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("translation") / "run"
    args = ["run", "translation", "--run-dir", str(run_dir)]
    result = run_cli(*args, *(a for s in TINY for a in ("--set", s)))
    return run_dir, result


def test_run_writes_every_output(text_run):
    run_dir, result = text_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test_bleu"] <= 100 and 0 <= metrics["test_chrf"] <= 100
    assert 0 <= metrics["test_exact_match"] <= 1
    assert metrics["examples"]["train"] > metrics["examples"]["test"] > 0
    assert set(metrics["stage_seconds"]) == {"ingest", "tokenize", "train", "evaluate", "export"}
    assert metrics["epochs_trained"] == 2
    assert {"encoder_0", "decoder_lstm"} <= set(metrics["gradients"]["layers"])
    assert len(metrics["samples"]) == 8 and {"source", "reference", "translation"} <= set(
        metrics["samples"][0]
    )
    for name in ("attention.png", "gradients.png", "training.png"):
        assert (run_dir / "plots" / name).stat().st_size > 0
    assert (run_dir / "gradients.csv").is_file()
    vocab = (run_dir / "vocab" / "target_vocab.txt").read_text(encoding="utf-8").split("\n")
    assert vocab[:4] == ["", "[UNK]", "[START]", "[END]"]
    meta = json.loads((run_dir / "export" / "assets.extra" / "metadata.json").read_text())
    assert meta["task"] == "translation"
    assert (run_dir / "export" / "assets.extra" / "source_vocab.txt").is_file()
    lines = (run_dir / "stages" / "evaluate" / "translations.tsv").read_text().splitlines()
    assert len(lines) == metrics["test_examples"] + 1
    assert "test BLEU / chrF" in result.stdout


def test_rerun_reuses_every_stage(text_run):
    run_dir, _ = text_run
    args = ["run", "translation", "--run-dir", str(run_dir)]
    result = run_cli(*args, *(a for s in TINY for a in ("--set", s)))
    assert "running stage" not in result.stderr
    assert result.stderr.count("reusing stage") == 5


def test_changing_decoding_reruns_only_evaluate_and_export(text_run, tmp_path):
    import shutil

    run_dir, _ = text_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    args = ["run", "translation", "--run-dir", str(copy), "--set", "decode.beam_width=1"]
    result = run_cli(
        *args,
        *(a for s in TINY[:-3] for a in ("--set", s)),
        "--set",
        "decode.max_length=12",
        "--set",
        "eval.attention_plots=2",
    )
    assert "running stage evaluate" in result.stderr and "running stage export" in result.stderr
    assert "running stage train" not in result.stderr


def test_export_runs_in_plain_tensorflow(text_run, tmp_path):
    run_dir, _ = text_run
    script = textwrap.dedent(
        f"""
        import sys
        import tensorflow as tf
        import tensorflow_text  # registers the text ops (Unicode normalization) of the export
        assert not any(m.split(".")[0] in ("data", "models", "pipelines", "keras_tuner") for m in sys.modules)
        serve = tf.saved_model.load({str(run_dir / "export")!r}).signatures["serving_default"]
        out = serve(text=tf.constant(["March 3, 2021", "", "le 1er mai 1999 et encore plus de mots"]))
        print([t.decode() for t in out["translation"].numpy()])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    outputs = eval(result.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list
    assert len(outputs) == 3 and all(isinstance(o, str) for o in outputs)


def test_export_agrees_with_evaluation(text_run):
    import tensorflow as tf

    run_dir, _ = text_run
    rows = (run_dir / "stages" / "evaluate" / "translations.tsv").read_text().splitlines()[1:6]
    sources = [r.split("\t")[0] for r in rows]
    expected = [r.split("\t")[2] for r in rows]
    import tensorflow_text  # noqa: F401 - registers the export's Unicode normalization op

    serve = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    got = [t.decode() for t in serve(text=tf.constant(sources))["translation"].numpy()]
    assert got == expected


def test_predict_sentences_and_stdin(text_run):
    run_dir, _ = text_run
    result = run_cli(
        "predict", str(run_dir / "export"), "March 3, 2021", "-", stdin="3 mars 2021\n1.2.1999\n"
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["input"] for line in lines] == ["March 3, 2021", "3 mars 2021", "1.2.1999"]
    assert all(isinstance(line["translation"], str) for line in lines)


def test_predict_reports_bad_lines_and_exits_1(text_run):
    run_dir, _ = text_run
    result = subprocess.run(
        [sys.executable, "run.py", "predict", str(run_dir / "export"), "-"],
        cwd=Path(__file__).resolve().parents[1],
        input=b"3 mars 2021\n\nbad \xff byte\n1.2.1999\n",
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr.decode()
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(lines) == 4  # one line per input line, in order
    assert "translation" in lines[0] and "translation" in lines[3]
    assert lines[1]["error"].startswith("empty input") and "not UTF-8" in lines[2]["error"]


def test_serving_odd_text_gets_a_defined_answer(text_run):
    import unicodedata

    import tensorflow as tf

    run_dir, _ = text_run
    import tensorflow_text  # noqa: F401 - registers the export's Unicode normalization op

    serve = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    sentence = "mercredi 3 décembre 2021"
    odd = [
        "",
        "   ",
        " ".join(["mot"] * 1000),  # 1,000 words
        "漢字 ☃ 🙂 ȹ",  # characters never seen in training
        unicodedata.normalize("NFD", sentence),
        sentence,
    ]
    out = [t.decode() for t in serve(text=tf.constant(odd))["translation"].numpy()]
    assert out[0] == "" and out[1] == ""  # nothing in, nothing out
    assert all(isinstance(t, str) for t in out[2:4])
    assert out[4] == out[5]  # the export normalizes Unicode itself


def test_bad_source_is_a_clear_error(tmp_path):
    result = run_cli(
        "run",
        "translation",
        "--run-dir",
        str(tmp_path / "r"),
        "--set",
        f"data.source=tsv:{tmp_path}/none.tsv",
        check=False,
    )
    assert result.returncode == 2
    assert "none.tsv" in result.stderr and "Expected tsv:PATH" in result.stderr
