"""The translation pipeline: ingest -> tokenize -> train -> evaluate -> export."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from typing import Any

import numpy as np

from data.files import read_json, write_json
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
    """Reads pairs, cleans them, drops (and lists) unusable ones, splits by source sentence."""
    from data.text import tokenize_many
    from data.text_sources import UNUSABLE, list_pairs, prepare_pairs

    config: TranslationConfig = ctx.config
    listing = list_pairs(config.data, config.runtime.seed)

    def token_counts(sentences: list[str], side: str) -> list[int]:
        return [len(t) for t in tokenize_many(sentences, config.text, side)]

    pairs, rejected = prepare_pairs(
        listing, config.data, config.text, token_counts, config.runtime.seed
    )
    counts = {s: sum(p["split"] == s for p in pairs) for s in SPLITS}
    unusable = [(r["item"], r["reason"]) for r in rejected if r["kind"] in UNUSABLE]
    check_rejected(
        len(listing.pairs) + len(listing.rejected) - len(unusable),
        unusable,
        config.data.max_rejected_percent,
        "lines",
    )
    check_splits(
        counts,
        "pairs",
        config.data.source,
        "Check data.val_percent, data.test_percent and the length limits in text.",
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
    for name in ("source_vocab.txt", "target_vocab.txt"):
        shutil.copy(ctx.out_dir / name, ctx.output(f"vocab/{name}"))
    return {
        "metrics": {
            "vocab_size": {"source": len(vocab_src), "target": len(vocab_tgt)},
            "unknown_token_rate": unknown,
        }
    }


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


def _train_datasets(ctx: StageContext) -> tuple[Any, Any, int]:
    from data.text_datasets import PairIds, pair_dataset

    config: TranslationConfig = ctx.config
    ids = {s: PairIds.load(ctx.input("tokenize") / f"{s}.npz") for s in ("train", "validation")}
    bs, bucket = config.train.batch_size, config.train.bucket_by_length
    train_ds = pair_dataset(ids["train"], bs, config.train.shuffle, config.runtime.seed, bucket)
    val_ds = pair_dataset(ids["validation"], bs, bucket_by_length=bucket)
    return train_ds, val_ds, len(ids["train"])


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
    """Decodes the test split; sacreBLEU BLEU and chrF, exact match, samples, attention plot."""
    import sacrebleu

    from data.text_datasets import PairIds
    from models.decoding import detokenize, translate_ids

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
    from data.text import tokenize_many
    from models.decoding import attention_panel
    from pipelines.reporting import plot_attention

    config: TranslationConfig = ctx.config
    vocab_tgt = read_vocabulary(ctx.input("tokenize") / "target_vocab.txt")
    panels = [
        attention_panel(
            model,
            sources[i],
            tokenize_many([pairs[i]["source"]], config.text, "source")[0],
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
    test = read_json(ctx.input("ingest") / "test.json")[:4]
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
                version=2,
                sections=("data", "text", "runtime.seed"),
                watch=lambda config: source_state(config.data),
            ),
            Stage(
                "tokenize",
                tokenize,
                version=2,
                reads=("ingest",),
                sections=("text",),
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
                version=3,  # 3: the attention signature
                reads=("ingest", "tokenize", "train", "evaluate"),
                sections=("export", "decode", "text"),
                outputs=("export",),
            ),
        ),
        summarize=translation_summary,
    )
)
