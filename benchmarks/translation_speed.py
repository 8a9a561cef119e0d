"""Translation speed: what length bucketing buys in training, and what beam search costs.

Training: examples/s of the same encoder-decoder on the same sentence pairs, batched with
``bucket_by_sequence_length`` against plain padded batches in shuffled order (the baseline).
Decoding: sentences/s of beam search (width 4) against greedy decoding (the baseline). Variants
alternate in rounds so machine noise hits all of them alike; ratios are printed.
Data: Tatoeba Spanish->English when ``../shared/data`` is present, else the built-in dates task.
Usage: python benchmarks/translation_speed.py [--steps 60] [--rounds 3] [--pairs 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from data.text import TextConfig, build_vocabulary, encode, tokenize_many  # noqa: E402
from data.text_datasets import PairIds, pair_dataset  # noqa: E402
from data.text_sources import TextDataConfig, list_pairs, prepare_pairs  # noqa: E402
from models.decoding import DecodeConfig, decode_ids  # noqa: E402
from models.seq2seq import Translator, masked_loss  # noqa: E402


def load_ids(max_pairs: int) -> tuple[PairIds, int, int, str]:
    tatoeba = ROOT.parent / "shared" / "data" / "tatoeba_spa_eng" / "spa.txt"
    if tatoeba.is_file():
        data = TextDataConfig(source=f"tsv:{tatoeba}", direction="reverse", max_pairs=max_pairs)
        name = "Tatoeba spa->eng"
    else:
        data = TextDataConfig(max_pairs=max_pairs)
        name = "built-in dates"
    text = TextConfig(source_vocab=8000, target_vocab=6000)
    pairs, _ = prepare_pairs(
        list_pairs(data, 0),
        data,
        text,
        lambda s, side: [len(t) for t in tokenize_many(s, text, side)],
        0,
    )
    src = tokenize_many([p["source"] for p in pairs], text, "source")
    tgt = tokenize_many([p["target"] for p in pairs], text)
    vs, vt = build_vocabulary(src, 8000, 1), build_vocabulary(tgt, 6000, 1)
    return PairIds.from_lists(encode(src, vs), encode(tgt, vt)), len(vs), len(vt), name


def make_model(vs: int, vt: int) -> Translator:
    keras.utils.set_random_seed(0)
    model = Translator(vs, vt, {"units": 128, "embedding_dim": 128, "attention_units": 128})
    model.compile(keras.optimizers.Adam(1e-3, clipnorm=1.0), masked_loss)
    return model.build_with_dummy()


def train_rate(ids: PairIds, vs: int, vt: int, bucket: bool, steps: int, batch: int) -> float:
    model = make_model(vs, vt)
    ds = pair_dataset(ids, batch, shuffle=True, bucket_by_length=bucket).repeat()
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def decode_rate(model: Translator, sources: list[np.ndarray], config: DecodeConfig) -> float:
    fn = tf.function(
        lambda s: decode_ids(model, s, config),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )
    width = max(len(s) for s in sources)
    batch = np.zeros((len(sources), width), np.int32)
    for i, s in enumerate(sources):
        batch[i, : len(s)] = s
    fn(tf.constant(batch[:8]))  # trace
    start = time.perf_counter()
    fn(tf.constant(batch))
    return len(sources) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    ids, vs, vt, name = load_ids(args.pairs)
    print(f"data: {name}, {len(ids)} pairs; {os.cpu_count()} CPUs")
    rates: dict[str, list[float]] = {"padded (baseline)": [], "bucketed": []}
    for _ in range(args.rounds):
        rates["padded (baseline)"].append(train_rate(ids, vs, vt, False, args.steps, args.batch))
        rates["bucketed"].append(train_rate(ids, vs, vt, True, args.steps, args.batch))
    base = np.median(rates["padded (baseline)"])
    print("training, examples/s (median of rounds):")
    for key, values in rates.items():
        print(f"  {key:20s} {np.median(values):8.1f}   x{np.median(values) / base:.2f}")

    model = make_model(vs, vt)
    sources = ids.sources()[:256]
    decoding: dict[str, list[float]] = {"greedy (baseline)": [], "beam 4": []}
    for _ in range(args.rounds):
        decoding["greedy (baseline)"].append(
            decode_rate(model, sources, DecodeConfig(beam_width=1))
        )
        decoding["beam 4"].append(decode_rate(model, sources, DecodeConfig(beam_width=4)))
    base = np.median(decoding["greedy (baseline)"])
    print("decoding 256 sentences in one batch, sentences/s (median of rounds; untrained model,")
    print("so hypotheses run to max_length: an upper bound on the cost):")
    for key, values in decoding.items():
        print(f"  {key:20s} {np.median(values):8.1f}   x{np.median(values) / base:.2f}")


if __name__ == "__main__":
    main()
