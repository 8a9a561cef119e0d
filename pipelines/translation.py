"""The translation pipeline: ingest -> tokenize -> train -> evaluate -> export."""

from __future__ import annotations

import itertools
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from data.files import JsonArrayWriter, JsonLinesWriter, iter_json_lines, read_json_lines
from data.text import read_vocabulary
from data.text_sources import SPLITS, source_state
from pipelines.reporting import translation_summary
from pipelines.runner import PIPELINES, Pipeline, Stage, StageContext
from pipelines.stages import (
    TRAIN_OUTPUTS,
    TRAIN_SECTIONS,
    TrainTask,
    check_rejected,
    check_splits,
    require_trained,
    train_stage,
)
from pipelines.translation_config import TranslationConfig

# ---------------------------------------------------------------- ingest


def ingest(ctx: StageContext) -> dict[str, Any]:
    """Reads pairs, cleans them, drops (and lists) unusable ones, splits by source sentence.

    Streams: the source is read a line at a time and cleaned and length-checked a batch at a
    time; kept pairs go to a spool file, then (after the ``max_pairs`` sample, which needs their
    number) to ``SPLIT.jsonl``. Memory does not grow with the corpus beyond de-duplication's
    16-byte digest per pair.
    """
    from data.text import tokenize_many
    from data.text_sources import (
        UNUSABLE,
        filter_pairs,
        is_rejection,
        iter_source,
        sample_indices,
    )

    config: TranslationConfig = ctx.config
    items = iter_source(config.data, config.runtime.seed)

    def token_counts(sentences: list[str], side: str) -> list[int]:
        return [len(t) for t in tokenize_many(sentences, config.text, side)]

    reasons: Counter = Counter()
    unusable: list[tuple[str, str]] = []  # the first few, for the error message
    n_unusable = kept = 0
    spool = ctx.out_dir / "kept.jsonl.tmp"
    with JsonArrayWriter(ctx.out_dir / "rejected.json") as rejected, JsonLinesWriter(spool) as out:
        for record in filter_pairs(items, config.data, config.text, token_counts):
            if not is_rejection(record):
                out.write(record)
                continue
            rejected.write(record)
            reasons[record["kind"]] += record.get("count", 1)
            if record["kind"] in UNUSABLE:
                n_unusable += 1
                if len(unusable) < 5:
                    unusable.append((record["item"], record["reason"]))
        kept = out.count
        chosen, dropped = sample_indices(kept, config.data.max_pairs, config.runtime.seed)
        if dropped:
            rejected.write(dropped)
            reasons[dropped["kind"]] += dropped["count"]
    counts = dict.fromkeys(SPLITS, 0)
    writers = {split: JsonLinesWriter(ctx.out_dir / f"{split}.jsonl") for split in SPLITS}
    for i, pair in enumerate(iter_json_lines(spool)):
        if chosen is None or i in chosen:
            writers[pair["split"]].write(pair)
            counts[pair["split"]] += 1
    for writer in writers.values():
        writer.close()
    spool.unlink()
    check_rejected(
        kept + reasons["duplicate pair"] + reasons["source too long"] + reasons["target too long"],
        unusable,
        config.data.max_rejected_percent,
        "lines",
        total_rejected=n_unusable,
    )
    check_splits(
        counts,
        "pairs",
        config.data.source,
        "Check data.val_percent, data.test_percent and the length limits in text.",
    )
    return {
        "metrics": {
            "source": config.data.source,
            "direction": config.data.direction,
            "examples": counts,
            "rejected": {"ingest": sum(reasons.values())},
            "rejected_reasons": dict(reasons.most_common()),
        }
    }


# ---------------------------------------------------------------- tokenize


def _sentences(folder: Any, split: str, side: str) -> Iterator[str]:
    """One side of a split's pairs, a sentence at a time (ingest stored them cleaned)."""
    return (pair[side] for pair in iter_json_lines(folder / f"{split}.jsonl"))


def _batches(folder: Any, split: str, size: int = 4096) -> Iterator[list[dict[str, str]]]:
    pairs = iter_json_lines(folder / f"{split}.jsonl")
    while batch := list(itertools.islice(pairs, size)):
        yield batch


def tokenize(ctx: StageContext) -> dict[str, Any]:
    """Builds both vocabularies from the training split; writes token ids of every split.

    Word and character vocabularies are the most frequent training tokens; a subword level
    learns its vocabulary (one per language, or one joint) from the training sentences only.
    Streams: sentences are read, split and counted a batch at a time, and token ids are written
    as shards (``data.text_datasets.PairShardWriter``), so memory does not grow with the corpus
    beyond the token counts.
    """
    from data.subword import Codec, save_codec
    from data.text import UNK_ID, encode, tokenize_many, vocabulary_from_counts
    from data.text_datasets import PairShardWriter

    config: TranslationConfig = ctx.config
    text = config.text
    ingest_dir = ctx.input("ingest")
    vocabs: dict[str, list[str]] = {}
    codecs: dict[str, Codec] = {}
    if text.level == "subword":
        vocabs, codecs = _learn_subwords(text, ingest_dir, config.runtime.seed)
    else:
        sizes = {"source": text.source_vocab, "target": text.target_vocab}
        counts = {side: Counter() for side in SIDES}
        for batch in _batches(ingest_dir, "train"):  # one pass, both sides
            for side in SIDES:
                for row in tokenize_many([p[side] for p in batch], text, side):
                    counts[side].update(row)
        for side in SIDES:
            vocabs[side] = vocabulary_from_counts(counts[side], sizes[side], text.min_count)
            codecs[side] = Codec(text.level)
    for side in SIDES:
        save_codec(codecs[side], vocabs[side], ctx.out_dir, side)
    unknown: dict[str, dict[str, float]] = {}
    pieces, words = Counter(), Counter()  # train tokens and word tokens per side (subwords)
    for split in SPLITS:
        writer = PairShardWriter(ctx.out_dir, split)
        n_unknown, n_tokens = Counter(), Counter()
        for batch in _batches(ingest_dir, split):
            ids = {}
            for side in SIDES:
                sentences = [p[side] for p in batch]
                rows = tokenize_many(sentences, text, side, codec=codecs[side])
                ids[side] = encode(rows, vocabs[side])
                n_unknown[side] += sum(t == UNK_ID for row in ids[side] for t in row)
                n_tokens[side] += sum(map(len, rows))
                if text.level == "subword" and split == "train":
                    pieces[side] += sum(map(len, rows))
                    words[side] += sum(map(len, tokenize_many(sentences, text, side)))
            writer.add(ids["source"], ids["target"])
        writer.close()
        unknown[split] = {
            side: round(n_unknown[side] / n_tokens[side], 4) if n_tokens[side] else 0.0
            for side in SIDES
        }
    for path in sorted(ctx.out_dir.iterdir()):
        if path.name.endswith(("_vocab.txt", ".model")):
            shutil.copy(path, ctx.output(f"vocab/{path.name}"))
    metrics: dict[str, Any] = {
        "vocab_size": {side: len(vocabs[side]) for side in SIDES},
        "unknown_token_rate": unknown,
    }
    if text.level == "subword":  # word tokens: the default split of a subword level
        metrics["subwords_per_word"] = {
            side: round(pieces[side] / max(1, words[side]), 3) for side in SIDES
        }
    return {"metrics": metrics}


SIDES = ("source", "target")


def _learn_subwords(
    text: Any, ingest_dir: Any, seed: int
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Subword vocabularies and codecs learned from the training split (joint or per side).

    The learners read the sentences as a stream (``data.subword.train_codec``).
    """
    from data.subword import train_codec

    if text.joint_vocab:
        both = itertools.chain(*(_sentences(ingest_dir, "train", side) for side in SIDES))
        vocab, codec = train_codec(both, text.source_vocab, text, seed)
        return dict.fromkeys(SIDES, vocab), dict.fromkeys(SIDES, codec)
    sizes = {"source": text.source_vocab, "target": text.target_vocab}
    # Ingest stored the sentences cleaned (``data.text.clean``), as the graph standardizes them.
    learned = {
        side: train_codec(_sentences(ingest_dir, "train", side), sizes[side], text, seed)
        for side in SIDES
    }
    return {s: v for s, (v, _) in learned.items()}, {s: c for s, (_, c) in learned.items()}


# ---------------------------------------------------------------- train


def build_model(config: TranslationConfig, source_vocab: int, target_vocab: int):  # noqa: ANN201
    """The encoder-decoder for this config (one builder for run, evaluate, export and tuning)."""
    from models.seq2seq import Translator

    return Translator(
        source_vocab,
        target_vocab,
        dict(config.model.__dict__),
        seed=config.runtime.seed,
        name="translator",
    )


def _codec(ctx: StageContext, side: str):  # noqa: ANN202 - data.subword.Codec
    from data.subword import load_codec

    return load_codec(ctx.config.text, ctx.input("tokenize"), side)


def _vocab_sizes(ctx: StageContext) -> tuple[int, int]:
    tok = ctx.input("tokenize")
    return (
        len(read_vocabulary(tok / "source_vocab.txt")),
        len(read_vocabulary(tok / "target_vocab.txt")),
    )


def _train_datasets(ctx: StageContext) -> tuple[Any, Any, int]:
    from data.text_datasets import split_dataset, split_size

    config: TranslationConfig = ctx.config
    folder, bs, bucket = (
        ctx.input("tokenize"),
        config.train.batch_size,
        config.train.bucket_by_length,
    )
    train_ds = split_dataset(folder, "train", bs, config.train.shuffle, config.runtime.seed, bucket)
    val_ds = split_dataset(folder, "validation", bs, bucket_by_length=bucket)
    return train_ds, val_ds, split_size(folder, "train")


def _build_for_training(ctx: StageContext, train_ds: Any) -> Any:
    return build_model(ctx.config, *_vocab_sizes(ctx)).build_with_dummy()


def _recurrent_layers(model: Any) -> list[str]:
    return [*(layer.name for layer in model.encoder_layers), model.decoder.name]


def _metrics() -> list:
    from models.seq2seq import TokenAccuracy

    return [TokenAccuracy()]


def train(ctx: StageContext) -> dict[str, Any]:
    """Fits the encoder-decoder with the shared train stage (clipping, monitor, backups)."""
    from models.seq2seq import smoothed_loss

    task = TrainTask(
        _train_datasets,
        _build_for_training,
        _recurrent_layers,
        loss=smoothed_loss(ctx.config.model.label_smoothing),
        metrics=_metrics,
        save_as="model.weights.h5",
        accuracy_key="val_token_accuracy",
    )
    return train_stage(task)(ctx)


# ---------------------------------------------------------------- evaluate


def load_trained(ctx: StageContext):  # noqa: ANN201
    """The trained model of this run, rebuilt from the config and loaded from its weights."""
    config: TranslationConfig = ctx.config
    model = build_model(config, *_vocab_sizes(ctx)).build_with_dummy()
    model.load_weights(ctx.input("train") / "model.weights.h5")
    return model


def evaluate(ctx: StageContext) -> dict[str, Any]:
    """Decodes the test split (and validation); sacreBLEU BLEU and chrF, exact match, samples."""
    import sacrebleu

    from data.text_datasets import load_split
    from models.decoding import detokenize, translate_ids

    config: TranslationConfig = ctx.config
    model = load_trained(ctx)
    codec = _codec(ctx, "target")
    vocab_tgt = read_vocabulary(ctx.input("tokenize") / "target_vocab.txt")

    def translate(split: str) -> tuple[list[dict], np.ndarray, list[str], float]:
        pairs = read_json_lines(ctx.input("ingest") / f"{split}.jsonl")
        sources = load_split(ctx.input("tokenize"), split).sources()
        start = time.perf_counter()
        hypotheses = detokenize(translate_ids(model, sources, config.decode), vocab_tgt, codec)
        return pairs, sources, hypotheses, time.perf_counter() - start

    bleu_metric, chrf_metric = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    validation: dict[str, float] = {}
    if config.eval.validation_bleu:  # what settings are chosen by (never the test split)
        val_pairs, _, val_out, _ = translate("validation")
        val_refs = [[p["target"] for p in val_pairs]]
        validation = {
            "val_bleu": round(bleu_metric.corpus_score(val_out, val_refs).score, 2),
            "val_chrf": round(chrf_metric.corpus_score(val_out, val_refs).score, 2),
        }
    pairs, sources, hypotheses, seconds = translate("test")
    references = [p["target"] for p in pairs]
    bleu = bleu_metric.corpus_score(hypotheses, [references])
    chrf = chrf_metric.corpus_score(hypotheses, [references])
    exact = float(np.mean([h == r for h, r in zip(hypotheses, references, strict=True)]))
    with (ctx.out_dir / "translations.tsv").open("w", encoding="utf-8") as handle:
        handle.write("source\treference\ttranslation\n")
        for p, h in zip(pairs, hypotheses, strict=True):
            handle.write(f"{p['source']}\t{p['target']}\t{h}\n")
    rng = np.random.default_rng(config.runtime.seed)
    chosen = rng.choice(len(pairs), size=min(config.eval.samples, len(pairs)), replace=False)
    samples = [
        {"source": pairs[i]["source"], "reference": references[i], "translation": hypotheses[i]}
        for i in sorted(chosen)
    ]
    if config.model.attention != "none" and config.eval.attention_plots:
        _plot_attention(ctx, model, pairs, sources, chosen[: config.eval.attention_plots])
    return {
        "metrics": {
            "test_bleu": round(bleu.score, 2),
            "test_chrf": round(chrf.score, 2),
            "test_exact_match": round(exact, 4),
            "test_examples": len(pairs),
            **validation,
            "decoding": {
                "beam_width": config.decode.beam_width,
                "length_penalty": config.decode.length_penalty,
                "sentences_per_second": round(len(pairs) / max(seconds, 1e-9), 1),
            },
            "bleu_signature": str(bleu_metric.get_signature()),
            "samples": samples,
        }
    }


def _plot_attention(ctx: StageContext, model, pairs, sources, chosen) -> None:  # noqa: ANN001
    """Attention heat maps (greedy decoding) for a few test sentences."""
    from data.text import tokenize_many
    from models.decoding import attention_panel
    from pipelines.reporting import plot_attention

    config: TranslationConfig = ctx.config
    vocab_tgt = read_vocabulary(ctx.input("tokenize") / "target_vocab.txt")
    source_codec = _codec(ctx, "source")
    panels = [
        attention_panel(
            model,
            sources[i],
            tokenize_many([pairs[i]["source"]], config.text, "source", codec=source_codec)[0],
            vocab_tgt,
            config.decode,
        )
        for i in chosen
    ]
    plot_attention(panels, ctx.output("plots/attention.png"))


# ---------------------------------------------------------------- export


def export(ctx: StageContext) -> dict[str, Any]:
    """Writes ``RUN_DIR/export``: a SavedModel translating raw strings (tokenize, decode, join)."""
    from models.export import export_translator

    config: TranslationConfig = ctx.config
    if not config.export.enabled:
        return {"skipped": "export.enabled is false"}
    require_trained(ctx)
    tok = ctx.input("tokenize")
    model = load_trained(ctx)
    test = read_json_lines(ctx.input("ingest") / "test.jsonl", limit=4)
    export_translator(
        model,
        config.text,
        config.decode,
        read_vocabulary(tok / "source_vocab.txt"),
        read_vocabulary(tok / "target_vocab.txt"),
        ctx.output("export"),
        metadata={
            "source": config.data.source,
            "direction": config.data.direction,
            "test_bleu": ctx.results.get("evaluate", {}).get("metrics", {}).get("test_bleu"),
        },
        check_sentences=[p["source"] for p in test],
        codecs=(_codec(ctx, "source"), _codec(ctx, "target")),
    )
    final = ctx.run_dir / "export"
    return {"path": str(final), "metrics": {"export_dir": str(final)}}


PIPELINE = PIPELINES.register("translation")(
    Pipeline(
        name="translation",
        config_class=TranslationConfig,
        stages=(
            Stage(
                "ingest",
                ingest,
                version=3,  # 3: SPLIT.jsonl, written as the source streams past
                sections=("data", "text", "runtime.seed"),
                watch=lambda config: source_state(config.data),
            ),
            Stage(
                "tokenize",
                tokenize,
                version=4,  # 4: token ids as shards (SPLIT-NNNNN.npz + SPLIT.shards.json)
                reads=("ingest",),
                sections=("text", "runtime.seed"),
                outputs=("vocab",),
            ),
            Stage(
                "train",
                train,
                version=2,
                reads=("tokenize",),
                sections=TRAIN_SECTIONS,
                outputs=TRAIN_OUTPUTS,
            ),
            Stage(
                "evaluate",
                evaluate,
                version=2,
                reads=("ingest", "tokenize", "train"),
                sections=("decode", "eval", "text.level"),
                outputs=("plots/attention.png",),
            ),
            Stage(
                "export",
                export,
                version=4,  # 4: subword codecs (their models in assets.extra)
                reads=("ingest", "tokenize", "train", "evaluate"),
                sections=("export", "decode", "text"),
                outputs=("export",),
            ),
        ),
        summarize=translation_summary,
    )
)
