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
            Stage("first", first, sections=("a",)),
            Stage("second", second, reads=("first",), sections=("b",)),
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
