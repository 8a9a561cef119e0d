"""Token-id shards of the tokenize stage and the ``tf.data`` pipelines that stream them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np

from data.text_datasets import (
    PairIds,
    PairShardWriter,
    load_split,
    pair_dataset,
    quantiles_from_counts,
    split_dataset,
    split_size,
)
from tests.conftest import ROOT
from tests.test_translation import TINY


def _random_ids(n: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    rng = np.random.default_rng(seed)
    source = [rng.integers(4, 50, rng.integers(1, 15)).tolist() for _ in range(n)]
    target = [rng.integers(4, 50, rng.integers(1, 12)).tolist() for _ in range(n)]
    return source, target


def _written(tmp_path, source, target, shard_pairs: int, batch: int = 37):
    writer = PairShardWriter(tmp_path, "train", shard_pairs)
    for start in range(0, len(source), batch):  # batches as the tokenize stage adds them
        writer.add(source[start : start + batch], target[start : start + batch])
    return writer.close()


def _batches(ds) -> list[tuple]:
    return [
        (x[0].numpy().tolist(), x[1].numpy().tolist(), y.numpy().tolist())
        for (x, y) in ds.take(1000)
    ]


def test_shards_hold_every_pair_in_order(tmp_path):
    source, target = _random_ids(500)
    manifest = _written(tmp_path, source, target, shard_pairs=64)
    assert manifest["shards"] == [f"train-{i:05d}.npz" for i in range(8)]  # 7 full + 1
    assert manifest["pairs"] == split_size(tmp_path, "train") == 500
    ids = load_split(tmp_path, "train")
    assert [r.tolist() for r in ids.sources()] == source
    assert [t.tolist() for _, t in ids.rows()] == target
    lengths = Counter(max(len(s), len(t) + 1) for s, t in zip(source, target, strict=True))
    assert manifest["length_counts"] == {str(k): v for k, v in sorted(lengths.items())}


def test_empty_split_is_one_empty_shard(tmp_path):
    manifest = PairShardWriter(tmp_path, "test", 8).close()
    assert manifest["pairs"] == 0 and len(load_split(tmp_path, "test")) == 0


def test_sharded_split_gives_the_same_batches_as_one_in_memory(tmp_path):
    """Up to the shuffle buffer, sharding changes nothing: same seed, same batches, each epoch."""
    source, target = _random_ids(700)
    _written(tmp_path, source, target, shard_pairs=100)
    memory = pair_dataset(PairIds.from_lists(source, target), 16, shuffle=True, seed=3).repeat(2)
    streamed = split_dataset(tmp_path, "train", 16, shuffle=True, seed=3).repeat(2)
    assert _batches(streamed) == _batches(memory)
    plain = split_dataset(tmp_path, "train", 16, bucket_by_length=False)
    memory_plain = pair_dataset(PairIds.from_lists(source, target), 16, bucket_by_length=False)
    assert _batches(plain) == _batches(memory_plain)


def test_split_larger_than_the_buffer_streams_each_pair_once_per_epoch(tmp_path):
    source, target = _random_ids(700)
    _written(tmp_path, source, target, shard_pairs=100)
    ds = split_dataset(tmp_path, "train", 16, shuffle=True, seed=0, shuffle_pairs=50)
    epochs = []
    for _ in range(2):
        seen = Counter()
        for (x, _), y in ds:
            for row, out in zip(x.numpy(), y.numpy(), strict=True):
                # padding is 0 and real ids are >= 4: strip it; END (3) closes the target
                seen[(tuple(row[row > 0]), tuple(out[out > 3]))] += 1
        epochs.append(seen)
    expected = Counter(zip(map(tuple, source), map(tuple, target), strict=True))
    assert epochs[0] == epochs[1] == expected


def test_quantiles_from_a_histogram_match_numpy():
    rng = np.random.default_rng(1)
    qs = np.linspace(0.1, 0.9, 9)
    for n in (1, 2, 5, 101, 2000):
        values = rng.integers(1, 40, n)
        np.testing.assert_allclose(
            quantiles_from_counts(Counter(values.tolist()), qs), np.quantile(values, qs)
        )


def test_translation_run_on_sharded_tokens(tmp_path):
    """The real stages with 50-pair shards: ingest streams, tokenize shards, train reads them."""
    # a process of its own: a run sets process-wide TensorFlow state (determinism, seeds)
    script = (
        "import sys; from data import text_datasets; text_datasets.SHARD_PAIRS = 50; "
        "from pipelines.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    run_dir = tmp_path / "run"
    sets = [*TINY, "train.epochs=1"]
    args = ["run", "translation", "--run-dir", str(run_dir), "--until", "train"]
    result = subprocess.run(
        [sys.executable, "-c", script, *args, *(a for s in sets for a in ("--set", s))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stages = run_dir / "stages"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((stages / "tokenize" / "train.shards.json").read_text())
    assert manifest["pairs"] == metrics["examples"]["train"] > 100
    assert len(manifest["shards"]) == -(-manifest["pairs"] // 50)
    lines = (stages / "ingest" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == manifest["pairs"]
    assert set(json.loads(lines[0])) == {"source", "target", "split", "origin"}
    rejected = json.loads((stages / "ingest" / "rejected.json").read_text(encoding="utf-8"))
    assert isinstance(rejected, list)
    assert metrics["epochs_trained"] == 1 and metrics["val_token_accuracy"] > 0
    history = (stages / "train" / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "nan" not in history[1]
