"""pipelines/runtime.py: the muted stderr of C++ runtimes."""

import os

import pytest

from pipelines.runtime import muted_stderr


def test_muted_stderr_hides_runtime_logs_but_shows_them_when_the_block_fails(capfd, monkeypatch):
    monkeypatch.delenv("RNN_VERBOSE", raising=False)
    with muted_stderr():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # hidden inside, stderr back after

    with pytest.raises(ValueError, match="bad model"), muted_stderr():
        os.write(2, b"ERROR: Didn't find op for builtin opcode\n")
        raise ValueError("bad model")
    assert "Didn't find op" in capfd.readouterr().err  # the runtime's reason is not lost

    monkeypatch.setenv("RNN_VERBOSE", "1")
    with muted_stderr():
        os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n"
