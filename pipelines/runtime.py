"""Process-wide settings: the runtime config section, the one seed setter, quiet TensorFlow."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Literal

from data.checks import check


@dataclass(frozen=True)
class RuntimeConfig:
    """The ``runtime`` config section.

    Attributes:
        seed: seeds Python, NumPy, TensorFlow/Keras, data generation, splits and augmentation.
        workers: processes for feature extraction.
        cache_dir: where generated data and cached features go.
        deterministic: make TensorFlow ops deterministic
            (``tf.config.experimental.enable_op_determinism``), so two runs with the same seed
            give the same metrics.
        strategy: ``auto``, ``default``, ``mirrored`` or ``multi_worker``: the
            ``tf.distribute`` strategy training runs under (``pipelines.distribute``).
    """

    seed: int = 0
    workers: int = 2
    cache_dir: str = ".cache"
    deterministic: bool = True
    strategy: Literal["auto", "default", "mirrored", "multi_worker"] = "auto"

    def __post_init__(self) -> None:
        check(self.workers >= 1, "runtime.workers", self.workers, ">= 1")


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seeds every random generator the project uses (Python, NumPy, TensorFlow, Keras).

    Args:
        seed: the seed.
        deterministic: also make TensorFlow's ops deterministic (same results run to run, at
            some cost in speed). Once on, it stays on for the process.
    """
    import keras
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def quiet_tensorflow() -> None:
    """Imports TensorFlow with its start-up log silenced (set ``RNN_VERBOSE=1`` to see it)."""
    if os.environ.get("RNN_VERBOSE"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    # The C++ runtime prints to fd 2 before absl logging is configured; mute it during import.
    with muted_stderr():
        import tensorflow as tf  # noqa: F401

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


@contextlib.contextmanager
def muted_stderr():  # noqa: ANN201 - a context manager
    """Silences file descriptor 2, where C++ runtimes log, inside the block.

    What was written there is kept aside and printed if the block raises, so a runtime's reason
    for an error is not lost. Nothing is silenced when ``RNN_VERBOSE`` is set.
    """
    if os.environ.get("RNN_VERBOSE"):
        yield
        return
    try:
        fd = os.dup(2)
    except OSError:  # no stderr to mute
        yield
        return
    aside = tempfile.TemporaryFile()
    try:
        os.dup2(aside.fileno(), 2)
        yield
    except BaseException:
        os.dup2(fd, 2)
        aside.seek(0)
        sys.stderr.write(aside.read().decode("utf-8", "replace"))
        raise
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        aside.close()
