"""The translation pipeline: ingest -> tokenize -> train -> evaluate -> export."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.checks import check
from data.files import read_json, write_json
from data.text import TextConfig
from data.text_sources import SPLITS, TextDataConfig
from models.decoding import DecodeConfig
from models.gradients import GradientConfig
from models.seq2seq import Seq2SeqConfig
from models.training import OptimizerConfig, TrainConfig
from models.tuning import TuneConfig
from pipelines.reporting import summary_rows, training_rows
from pipelines.runner import PIPELINES, Pipeline, Stage, StageContext
from pipelines.runtime import RuntimeConfig, set_seed


@dataclass(frozen=True)
class TranslationEvalConfig:
    """The ``eval`` section of the translation pipeline.

    Attributes:
        samples: translations (source, reference, output) shown in the summary and metrics.json.
        attention_plots: test sentences drawn in the attention heat-map plot.
    """

    samples: int = 8
    attention_plots: int = 4

    def __post_init__(self) -> None:
        check(self.samples >= 0, "eval.samples", self.samples, ">= 0")
        check(self.attention_plots >= 0, "eval.attention_plots", self.attention_plots, ">= 0")


@dataclass(frozen=True)
class TextExportConfig:
    """The ``export`` section of the translation pipeline (decoding follows ``decode``).

    Attributes:
        enabled: write the SavedModel to ``RUN_DIR/export``.
    """

    enabled: bool = True


@dataclass(frozen=True)
class TranslationConfig:
    """Root config of the ``translation`` pipeline."""

    pipeline: str = "translation"
    data: TextDataConfig = field(default_factory=TextDataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    gradients: GradientConfig = field(default_factory=GradientConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(monitor="val_loss"))
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    eval: TranslationEvalConfig = field(default_factory=TranslationEvalConfig)
    export: TextExportConfig = field(default_factory=TextExportConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tune: TuneConfig = field(default_factory=lambda: TuneConfig(objective="val_loss"))


# ---------------------------------------------------------------- ingest


def ingest(ctx: StageContext) -> dict[str, Any]:
    """Reads pairs, cleans them, drops (and lists) unusable ones, splits by source sentence."""
    from data.text import tokenize_many
    from data.text_sources import list_pairs, prepare_pairs

    config: TranslationConfig = ctx.config
    listing = list_pairs(config.data, config.runtime.seed)

    def token_counts(sentences: list[str], side: str) -> list[int]:
        return [len(t) for t in tokenize_many(sentences, config.text, side)]

    pairs, rejected = prepare_pairs(
        listing, config.data, config.text, token_counts, config.runtime.seed
    )
    counts = {s: sum(p["split"] == s for p in pairs) for s in SPLITS}
    for split, count in counts.items():
        if not count:
            raise ValueError(
                f"The {split} split is empty after ingesting {config.data.source!r} "
                f"({len(pairs)} pairs kept, {len(rejected)} rejected). Check data.val_percent, "
                "data.test_percent and the length limits in text."
            )
    for split in SPLITS:
        write_json(ctx.out_dir / f"{split}.json", [p for p in pairs if p["split"] == split])
    write_json(ctx.out_dir / "rejected.json", rejected)
    reasons: Counter = Counter()
    for r in rejected:
        reasons[r["kind"]] += r.get("count", 1)
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


def tokenize(ctx: StageContext) -> dict[str, Any]:
    """Builds both vocabularies from the training split; writes token ids of every split."""
    from data.text import build_vocabulary, encode, tokenize_many
    from data.text_datasets import PairIds

    config: TranslationConfig = ctx.config
    text = config.text
    tokens = {}
    for split in SPLITS:
        pairs = read_json(ctx.input("ingest") / f"{split}.json")
        tokens[split] = (
            tokenize_many([p["source"] for p in pairs], text, "source"),
            tokenize_many([p["target"] for p in pairs], text, "target"),
        )
    vocab_src = build_vocabulary(tokens["train"][0], text.source_vocab, text.min_count)
    vocab_tgt = build_vocabulary(tokens["train"][1], text.target_vocab, text.min_count)
    for name, vocab in (("source_vocab.txt", vocab_src), ("target_vocab.txt", vocab_tgt)):
        (ctx.out_dir / name).write_text("\n".join(vocab) + "\n", encoding="utf-8")
    unknown = {}
    for split in SPLITS:
        src, tgt = encode(tokens[split][0], vocab_src), encode(tokens[split][1], vocab_tgt)
        PairIds.from_lists(src, tgt).save(ctx.out_dir / f"{split}.npz")
        unknown[split] = {
            side: round(float(np.mean([t == 1 for row in rows for t in row] or [0])), 4)
            for side, rows in (("source", src), ("target", tgt))
        }
    vocab_dir = ctx.run_dir / "vocab"
    vocab_dir.mkdir(exist_ok=True)
    for name in ("source_vocab.txt", "target_vocab.txt"):
        shutil.copy(ctx.out_dir / name, vocab_dir / name)
    return {
        "metrics": {
            "vocab_size": {"source": len(vocab_src), "target": len(vocab_tgt)},
            "unknown_token_rate": unknown,
        }
    }


def read_vocabulary(path: Path) -> list[str]:
    """A vocabulary file: one token per line, line number = id (line 1 is the empty padding)."""
    return path.read_text(encoding="utf-8").split("\n")[:-1]


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


def _vocab_sizes(ctx: StageContext) -> tuple[int, int]:
    tok = ctx.input("tokenize")
    return (
        len(read_vocabulary(tok / "source_vocab.txt")),
        len(read_vocabulary(tok / "target_vocab.txt")),
    )


def train(ctx: StageContext) -> dict[str, Any]:
    """Fits the encoder-decoder with clipping, gradient monitoring, checkpoints and backups."""
    from data.text_datasets import PairIds, pair_dataset
    from models.seq2seq import TokenAccuracy, smoothed_loss
    from models.training import fit_resumable
    from pipelines.speech_commands import finish_training

    config: TranslationConfig = ctx.config
    set_seed(config.runtime.seed)
    ids = {s: PairIds.load(ctx.input("tokenize") / f"{s}.npz") for s in ("train", "validation")}
    bs = config.train.batch_size
    train_ds = pair_dataset(
        ids["train"], bs, True, config.runtime.seed, config.train.bucket_by_length
    )
    val_ds = pair_dataset(ids["validation"], bs, bucket_by_length=config.train.bucket_by_length)
    model = build_model(config, *_vocab_sizes(ctx)).build_with_dummy()
    steps = config.train.steps_per_epoch or int(np.ceil(len(ids["train"]) / bs))
    ckpt_dir = ctx.run_dir / "checkpoints" / ctx.fingerprint
    if ctx.force:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    result = fit_resumable(
        model,
        train_ds,
        val_ds,
        config.train,
        config.optimizer,
        config.gradients,
        steps,
        ckpt_dir,
        ctx.run_dir / "logs",
        recurrent_layers=[
            *(layer.name for layer in model.encoder_layers),
            model.decoder.name,
        ],
        loss=smoothed_loss(config.model.label_smoothing),
        metrics=[TokenAccuracy()],
    )
    summary = finish_training(ctx, model, result, config.train.monitor, "model.weights.h5")
    summary["metrics"]["val_token_accuracy"] = summary["metrics"].pop("val_accuracy")
    return summary


# ---------------------------------------------------------------- evaluate


def load_trained(ctx: StageContext):  # noqa: ANN201
    """The trained model of this run, rebuilt from the config and loaded from its weights."""
    config: TranslationConfig = ctx.config
    model = build_model(config, *_vocab_sizes(ctx)).build_with_dummy()
    model.load_weights(ctx.input("train") / "model.weights.h5")
    return model


def translate_ids(model, sources: list[np.ndarray], decode: DecodeConfig) -> list[list[int]]:  # noqa: ANN001
    """Decodes id sequences in length-sorted batches; returns output ids in input order."""
    import tensorflow as tf

    from models.decoding import decode_ids

    fn = tf.function(
        lambda src: decode_ids(model, src, decode),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )
    order = np.argsort([len(s) for s in sources], kind="stable")
    outputs: list[list[int]] = [[] for _ in sources]
    from rich.progress import track

    batches = range(0, len(order), decode.batch_size)
    for start in track(batches, description="Translating test split", transient=True):
        chosen = order[start : start + decode.batch_size]
        width = max(1, max(len(sources[i]) for i in chosen))
        batch = np.zeros((len(chosen), width), np.int32)
        for row, i in enumerate(chosen):
            batch[row, : len(sources[i])] = sources[i]
        ids = fn(tf.constant(batch)).numpy()
        for row, i in enumerate(chosen):
            outputs[i] = ids[row].tolist()
    return outputs


def detokenize(rows: list[list[int]], vocabulary: list[str], level: str) -> list[str]:
    """Output ids -> sentences, with the same graph ops as the export."""
    import tensorflow as tf

    from data.text import join_tokens
    from models.decoding import ids_to_tokens

    if not rows:
        return []
    width = max(1, max(len(r) for r in rows))
    ids = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    tokens = ids_to_tokens(tf.constant(ids), tf.constant(vocabulary))
    return [s.decode("utf-8") for s in join_tokens(tokens, level).numpy()]


def evaluate(ctx: StageContext) -> dict[str, Any]:
    """Decodes the test split; sacreBLEU BLEU and chrF, exact match, samples, attention plot."""
    import sacrebleu

    from data.text_datasets import PairIds

    config: TranslationConfig = ctx.config
    pairs = read_json(ctx.input("ingest") / "test.json")
    ids = PairIds.load(ctx.input("tokenize") / "test.npz")
    vocab_tgt = read_vocabulary(ctx.input("tokenize") / "target_vocab.txt")
    model = load_trained(ctx)
    start = time.perf_counter()
    sources = ids.sources()
    hypotheses = detokenize(
        translate_ids(model, sources, config.decode), vocab_tgt, config.text.level
    )
    seconds = time.perf_counter() - start
    references = [p["target"] for p in pairs]
    bleu_metric, chrf_metric = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
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
    import tensorflow as tf

    from data.text import tokenize_many
    from models.decoding import greedy_decode
    from pipelines.reporting import plot_attention

    config: TranslationConfig = ctx.config
    vocab_tgt = read_vocabulary(ctx.input("tokenize") / "target_vocab.txt")
    panels = []
    for i in chosen:
        ids, weights = greedy_decode(
            model,
            tf.constant(sources[i][None], tf.int32),
            config.decode.max_length,
            config.decode.allow_unknown,
        )
        out = ids.numpy()[0].tolist()
        steps = out.index(3) + 1 if 3 in out else len(out)
        src_tokens = tokenize_many([pairs[i]["source"]], config.text, "source")[0]
        tgt_tokens = [vocab_tgt[t] for t in out[:steps]]
        panels.append((src_tokens, tgt_tokens, weights.numpy()[0, :steps, : len(src_tokens)]))
    plot_attention(panels, ctx.run_dir / "plots" / "attention.png")


# ---------------------------------------------------------------- export


def export(ctx: StageContext) -> dict[str, Any]:
    """Writes ``RUN_DIR/export``: a SavedModel translating raw strings (tokenize, decode, join)."""
    from models.export import export_translator

    config: TranslationConfig = ctx.config
    if not config.export.enabled:
        return {"skipped": "export.enabled is false"}
    if not ctx.results.get("train", {}).get("epochs"):
        raise RuntimeError("Refusing to export: the train stage reports no completed epoch")
    tok = ctx.input("tokenize")
    model = load_trained(ctx)
    test = read_json(ctx.input("ingest") / "test.json")[:4]
    out = export_translator(
        model,
        config.text,
        config.decode,
        read_vocabulary(tok / "source_vocab.txt"),
        read_vocabulary(tok / "target_vocab.txt"),
        ctx.run_dir / "export",
        metadata={
            "source": config.data.source,
            "direction": config.data.direction,
            "test_bleu": ctx.results.get("evaluate", {}).get("metrics", {}).get("test_bleu"),
        },
        check_sentences=[p["source"] for p in test],
    )
    return {"path": str(out), "metrics": {"export_dir": str(out)}}


def summarize(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Run-summary rows for this pipeline."""
    rows = [("source", f"{metrics.get('source', '')} ({metrics.get('direction', '')})")]
    rows += summary_rows(metrics)
    if "vocab_size" in metrics:
        v = metrics["vocab_size"]
        rows.append(("vocabulary", f"source {v['source']}, target {v['target']}"))
    if "val_token_accuracy" in metrics:
        rows.append(
            (
                "best val token accuracy",
                f"{metrics['val_token_accuracy']:.4f} (epoch {metrics['best_epoch']})",
            )
        )
    if "test_bleu" in metrics:
        d = metrics["decoding"]
        rows.append(
            (
                "test BLEU / chrF",
                f"{metrics['test_bleu']:.2f} / {metrics['test_chrf']:.2f} on "
                f"{metrics['test_examples']} pairs (beam {d['beam_width']})",
            )
        )
        rows.append(("test exact match", f"{metrics['test_exact_match']:.4f}"))
    for s in metrics.get("samples", [])[:5]:
        rows.append(("sample", f"{s['source']}  ->  {s['translation']}  (ref: {s['reference']})"))
    return rows + training_rows(metrics)


PIPELINE = PIPELINES.register("translation")(
    Pipeline(
        name="translation",
        config_class=TranslationConfig,
        stages=(
            Stage("ingest", ingest, sections=("data", "text", "runtime.seed")),
            Stage("tokenize", tokenize, reads=("ingest",), sections=("text",)),
            Stage(
                "train",
                train,
                reads=("tokenize",),
                sections=("model", "optimizer", "gradients", "train", "runtime.seed"),
            ),
            Stage(
                "evaluate",
                evaluate,
                reads=("ingest", "tokenize", "train"),
                sections=("decode", "eval", "text.level"),
            ),
            Stage(
                "export",
                export,
                reads=("ingest", "tokenize", "train", "evaluate"),
                sections=("export", "decode", "text"),
            ),
        ),
        summarize=summarize,
    )
)
