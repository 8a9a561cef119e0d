"""The stage runner: skip when unchanged, rerun downstream of a change, --force, --until, atomicity."""

from dataclasses import dataclass, field

import pytest

from pipelines.runner import Pipeline, Stage, run_pipeline


@dataclass(frozen=True)
class A:
    x: int = 1


@dataclass(frozen=True)
class B:
    y: int = 2


@dataclass(frozen=True)
class Root:
    a: A = field(default_factory=A)
    b: B = field(default_factory=B)


def make_pipeline(calls: list[str], fail_in: str | None = None) -> Pipeline:
    def first(ctx):
        calls.append("first")
        (ctx.out_dir / "value.txt").write_text(str(ctx.config.a.x))
        return {"metrics": {"x": ctx.config.a.x}}

    def second(ctx):
        calls.append("second")
        if fail_in == "second":
            (ctx.out_dir / "partial.txt").write_text("half")
            raise RuntimeError("boom")
        value = int((ctx.input("first") / "value.txt").read_text())
        return {"metrics": {"total": value + ctx.config.b.y}}

    return Pipeline(
        "toy",
        Root,
        (
            Stage("first", first, version=1, sections=("a",)),
            Stage("second", second, version=1, reads=("first",), sections=("b",)),
        ),
    )


def test_skips_unchanged_and_reruns_downstream(tmp_path):
    calls: list[str] = []
    report = run_pipeline(make_pipeline(calls), Root(), tmp_path)
    assert calls == ["first", "second"] and report.metrics["total"] == 3
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "metrics.json").is_file()

    calls.clear()
    report = run_pipeline(make_pipeline(calls), Root(), tmp_path)
    assert calls == [] and report.skipped == ["first", "second"] and report.metrics["total"] == 3

    calls.clear()
    report = run_pipeline(make_pipeline(calls), Root(b=B(5)), tmp_path)
    assert calls == ["second"] and report.metrics["total"] == 6

    calls.clear()
    report = run_pipeline(make_pipeline(calls), Root(a=A(10), b=B(5)), tmp_path)
    assert calls == ["first", "second"] and report.metrics["total"] == 15  # upstream change


def test_force_and_until(tmp_path):
    calls: list[str] = []
    run_pipeline(make_pipeline(calls), Root(), tmp_path, until="first")
    assert calls == ["first"]
    run_pipeline(make_pipeline(calls), Root(), tmp_path, force=True)
    assert calls == ["first", "first", "second"]
    with pytest.raises(ValueError, match="--until 'third': expected one of"):
        run_pipeline(make_pipeline(calls), Root(), tmp_path, until="third")


def test_failed_stage_leaves_no_output_and_reruns(tmp_path):
    calls: list[str] = []
    with pytest.raises(RuntimeError, match="boom"):
        run_pipeline(make_pipeline(calls, fail_in="second"), Root(), tmp_path)
    assert not (tmp_path / "stages" / "second").exists()
    assert (tmp_path / "stages" / "first" / "_stage.json").is_file()
    calls.clear()
    report = run_pipeline(make_pipeline(calls), Root(), tmp_path)
    assert calls == ["second"] and report.metrics["total"] == 3
    assert not (tmp_path / "stages" / "second" / "partial.txt").exists()


def test_stage_seconds_recorded(tmp_path):
    import json

    run_pipeline(make_pipeline([]), Root(), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["stage_seconds"]) == {"first", "second"}


def _publishing_pipeline(calls: list[str], folder, version: int = 1) -> Pipeline:
    from data.fingerprints import folder_state

    def read(ctx):
        calls.append("read")
        names = sorted(p.name for p in folder.iterdir())
        (ctx.out_dir / "names.txt").write_text("\n".join(names))
        return {"metrics": {"files": len(names)}}

    def publish(ctx):
        calls.append("publish")
        (ctx.output("export") / "sub").mkdir(parents=True)
        (ctx.output("export") / "sub" / "model.bin").write_text("weights")
        ctx.output("plots/a.png").write_text("png")
        return {}

    return Pipeline(
        "publishing",
        Root,
        (
            Stage("read", read, version=version, watch=lambda config: folder_state(folder)),
            Stage(
                "publish",
                publish,
                version=1,
                reads=("read",),
                outputs=("export", "plots/a.png", "plots/never.png"),
            ),
        ),
    )


def test_changed_input_files_rerun_the_stage_that_read_them(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.wav").write_text("1")
    calls: list[str] = []
    run = lambda: run_pipeline(_publishing_pipeline(calls, folder), Root(), tmp_path / "run")  # noqa: E731
    run()
    calls.clear()
    assert run().skipped == ["read", "publish"] and calls == []
    (folder / "b.wav").write_text("2")  # added
    assert run().metrics["files"] == 2 and calls == ["read", "publish"]
    calls.clear()
    (folder / "a.wav").write_text("changed")  # edited (size changes)
    run()
    assert calls == ["read", "publish"]
    calls.clear()
    (folder / "b.wav").unlink()  # removed
    assert run().metrics["files"] == 1 and calls == ["read", "publish"]


def test_a_new_stage_version_reruns_it(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    calls: list[str] = []
    run_pipeline(_publishing_pipeline(calls, folder), Root(), tmp_path / "run")
    calls.clear()
    run_pipeline(_publishing_pipeline(calls, folder, version=2), Root(), tmp_path / "run")
    assert calls == ["read", "publish"]


def test_outputs_are_published_and_a_missing_or_partial_one_reruns(tmp_path):
    import shutil

    folder = tmp_path / "data"
    folder.mkdir()
    calls: list[str] = []
    run_dir = tmp_path / "run"
    run = lambda: run_pipeline(_publishing_pipeline(calls, folder), Root(), run_dir)  # noqa: E731
    run()
    assert (run_dir / "export" / "sub" / "model.bin").read_text() == "weights"
    assert (run_dir / "plots" / "a.png").is_file() and not (
        run_dir / "plots" / "never.png"
    ).exists()
    assert not (run_dir / "stages" / "publish" / "_outputs").exists()
    shutil.rmtree(run_dir / "export")  # deleted
    calls.clear()
    report = run()
    assert calls == ["publish"] and report.skipped == ["read"]
    assert (run_dir / "export" / "sub" / "model.bin").is_file()
    (run_dir / "export" / "sub" / "model.bin").write_text("half")  # damaged
    calls.clear()
    run()
    assert calls == ["publish"]
    (run_dir / "plots" / "never.png").write_text("stale")  # not produced: a rerun removes it
    (run_dir / "plots" / "a.png").unlink()
    calls.clear()
    run()
    assert calls == ["publish"] and not (run_dir / "plots" / "never.png").exists()


def test_undeclared_output_is_a_bug_not_a_silent_file(tmp_path):
    def sneaky(ctx):
        ctx.output("secret.txt").write_text("x")
        return {}

    pipeline = Pipeline("sneaky", Root, (Stage("s", sneaky, version=1, outputs=("export",)),))
    with pytest.raises(RuntimeError, match=r"undeclared outputs \['secret.txt'\]"):
        run_pipeline(pipeline, Root(), tmp_path)
    assert not (tmp_path / "secret.txt").exists()


def test_run_dir_lock_names_the_holder(tmp_path):
    from pipelines.locking import RunDirBusyError, RunDirLock

    with RunDirLock(tmp_path):
        with pytest.raises(RunDirBusyError, match=rf"{tmp_path}.*in use by process \d+"):
            run_pipeline(make_pipeline([]), Root(), tmp_path)
    run_pipeline(make_pipeline([]), Root(), tmp_path)  # released


def test_every_stage_declares_a_version_and_no_pipeline_imports_another():
    import ast

    from pipelines.cli import _load_pipelines
    from pipelines.runner import PIPELINES
    from tests.conftest import ROOT

    _load_pipelines()
    for name in PIPELINES.names():
        for stage in PIPELINES.get(name).stages:
            assert isinstance(stage.version, int) and stage.version >= 1, (name, stage.name)
    modules = {"speech_commands", "translation"}
    for module in modules:
        tree = ast.parse((ROOT / "pipelines" / f"{module}.py").read_text())
        imported = {
            node.module.split(".")[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not imported & (modules - {module}), module


def test_atomic_text_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    import os

    from data.files import write_text_atomic

    target = tmp_path / "config.yaml"
    write_text_atomic(target, "old")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_text_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_setting_added_later_leaves_old_fingerprints_alone_while_at_its_default():
    """Fields marked OMIT_IF_DEFAULT (model.mixup_alpha, model.label_smoothing) are not hashed at
    their default, so runs from before they existed keep their fingerprints (and resume)."""
    from models.classifier import ModelConfig
    from pipelines import config as cfg
    from pipelines.cli import resolve_config
    from pipelines.runner import PIPELINES, fingerprint

    hashed = cfg.fingerprint_dict(ModelConfig())
    assert "cell" in hashed and not {"mixup_alpha", "label_smoothing"} & set(hashed)
    assert cfg.fingerprint_dict(ModelConfig(mixup_alpha=0.2))["mixup_alpha"] == 0.2
    assert {"mixup_alpha", "label_smoothing"} <= set(cfg.to_dict(ModelConfig()))  # config.yaml
    _, plain = resolve_config("speech_commands")
    _, mixed = resolve_config("speech_commands", overrides=["model.mixup_alpha=0.2"])
    train = next(s for s in PIPELINES.get("speech_commands").stages if s.name == "train")
    assert fingerprint(train, plain, {}) != fingerprint(train, mixed, {})
