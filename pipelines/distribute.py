"""Distribution strategies for the train stage: one process, several devices, several workers.

``runtime.strategy`` picks a ``tf.distribute`` strategy (``auto``: ``multi_worker`` when
``TF_CONFIG`` names a cluster of more than one task, ``mirrored`` with more than one GPU, else
``default``). The train stage builds, compiles and fits under its scope with a global batch of
``train.batch_size`` per replica; only the chief publishes what the run writes (the launcher,
``launch_workers``, gives the other workers run folders of their own, removed at the end).

Keras 3 (3.15) does not yet run ``fit`` under ``MultiWorkerMirroredStrategy`` (keras-team/keras
#20585): the symbolic build all-reduces a data batch in eager mode, and the per-step logs are
reduced along axis 0 although they are scalars. ``_patch_keras_multi_worker`` works around both,
on the private functions involved, only when that strategy is created.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from data.registry import Registry

STRATEGIES: Registry[str] = Registry("distribution strategy")
for _name, _what in (
    ("default", "one process, one device (TensorFlow's default strategy)"),
    ("mirrored", "one process, every local GPU (tf.distribute.MirroredStrategy)"),
    ("multi_worker", "one process per worker, as TF_CONFIG describes (MultiWorkerMirrored)"),
):
    STRATEGIES.register(_name)(_what)


def cluster_spec(env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The parsed ``TF_CONFIG`` (``cluster`` and ``task``), or None when it is unset.

    Raises:
        ValueError: ``TF_CONFIG`` is not JSON with a ``cluster`` mapping.
    """
    raw = (env if env is not None else os.environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error}): {raw[:200]!r}; expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict):
        raise ValueError(f"TF_CONFIG has no 'cluster' mapping: {raw[:200]!r}")
    return spec


def cluster_size(env: dict[str, str] | None = None) -> int:
    """Number of tasks (chief and workers) in ``TF_CONFIG``'s cluster; 1 without one."""
    spec = cluster_spec(env)
    if spec is None:
        return 1
    return sum(len(spec["cluster"].get(kind, [])) for kind in ("chief", "worker"))


def resolve(name: str, env: dict[str, str] | None = None) -> str:
    """The strategy ``runtime.strategy`` means here (``auto`` resolved)."""
    if name != "auto":
        STRATEGIES.get(name)  # a KeyError naming the choices
        return name
    if cluster_size(env) > 1:
        return "multi_worker"
    import tensorflow as tf

    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"


def is_chief(env: dict[str, str] | None = None) -> bool:
    """True for the task that publishes results: the ``chief``, else worker 0, else alone."""
    spec = cluster_spec(env)
    if spec is None:
        return True
    task = spec.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if "chief" in spec["cluster"]:
        return kind == "chief"
    return kind == "worker" and index == 0


@functools.cache
def strategy(name: str) -> Any:
    """The ``tf.distribute`` strategy for a resolved name, created once per process.

    ``MultiWorkerMirroredStrategy`` must be created before TensorFlow runs any op, so the
    command line creates it first (``prepare``); later calls get the same object.
    """
    import tensorflow as tf

    if name == "multi_worker":
        _patch_keras_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"runtime.strategy {name!r}; expected one of {STRATEGIES.names()} or auto")


def prepare(name: str) -> str:
    """Resolves ``runtime.strategy`` and creates a multi-worker strategy at start-up.

    Returns:
        The resolved name.
    """
    resolved = resolve(name)
    if resolved == "multi_worker":
        strategy(resolved)
    return resolved


def shard_for(dataset: Any, name: str) -> Any:
    """``dataset`` with the sharding a strategy needs: by element (the data is in memory)."""
    if name != "multi_worker":
        return dataset
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _patch_keras_multi_worker() -> None:
    """Makes Keras 3's TensorFlow trainer fit under ``MultiWorkerMirroredStrategy``.

    1. ``_maybe_symbolic_build`` all-reduces a whole data batch (eagerly, which fails for
       collective ops) only to build the model; it is built from one batch of the undistributed
       dataset instead.
    2. ``reduce_per_replica`` reduces the scalar logs with ``axis=0``; ``axis=None`` is right.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_rnn_pipelines_patched", False):
        return
    needed = ("reduce_per_replica", "_collective_all_reduce_multi_worker", "TensorFlowTrainer")
    missing = [name for name in needed if not hasattr(trainer, name)]
    if missing or not hasattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build"):
        import keras

        raise RuntimeError(
            f"runtime.strategy multi_worker: Keras {keras.__version__} lacks "
            f"{missing or ['TensorFlowTrainer._maybe_symbolic_build']}, which the multi-worker "
            "workaround patches (written for and tested with Keras 3.15); use that Keras or "
            "runtime.strategy=default"
        )
    original_reduce = trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tf.nest.map_structure(
                lambda v: (
                    strategy.reduce("MEAN", v, axis=None)
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                values,
            )
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if self._distribute_strategy is None or not trainer._collective_all_reduce_multi_worker(
            self._distribute_strategy
        ):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            # One batch of the undistributed dataset: drawing it from the distributed iterator
            # (and resetting it, as Keras does) would start training on a later shuffle order.
            data_batch = next(iter(iterator.data_adapter.get_tf_dataset()))
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer._rnn_pipelines_patched = True
