"""Tests of pipelines.reporting's summary table."""

from __future__ import annotations

from pipelines.reporting import print_summary


def test_piped_summary_keeps_a_long_path_on_one_line(capsys) -> None:
    path = "/tmp/" + "/".join(f"folder{i:02d}" for i in range(20)) + "/run"  # 188 characters
    rows = [
        ("run dir", path),
        ("stage seconds", "ingest 1.8"),
        ("test accuracy", "0.950\n(stored)"),
    ]
    print_summary("run", rows)
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "run dir" in line)
    assert path in line
    assert "0.950" in out and "(stored)" in out


def test_summary_of_short_rows_is_not_padded_past_the_default_width(capsys) -> None:
    print_summary("run", [("test accuracy", "0.950")])
    assert max(len(line.rstrip()) for line in capsys.readouterr().out.splitlines()) <= 80
