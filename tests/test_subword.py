"""Subword vocabularies: exact round trips in the graph, agreement with Python, the pipeline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import tensorflow as tf

from data.files import read_json_lines
from data.subword import load_codec, save_codec, train_codec
from data.text import TextConfig, clean, tokenize_many
from tests.test_cli import run_cli
from tests.test_translation import TINY

WORDS = "casa perro gato niño niña árbol canción corazón pequeño grande rojo azul".split()
TRAIN = [
    f"{a.capitalize()} y {b}, ¿{c}? ¡{d}!"
    for a in WORDS
    for b in WORDS
    for c, d in zip(WORDS[::-1], WORDS[1:] + WORDS[:1], strict=True)
][::3] + ['Dónde, NIÑO: Él dijo "hola" -- 0 1 2 3 4 5 6 7 8 9 € ... O\'Neil / (sí) ¡no!']
# Accents, punctuation glued and spaced, mixed case, quotes, digits, an unseen character (✈),
# several spaces, and a word split by an apostrophe.
HARD = [
    "¿Dónde está el NIÑO?",
    'Él dijo: "canción" -- y 12.5 €...',
    "casa✈perro   gato",
    "O'Neil, rojo/azul (grande)!",
    "",
]


@pytest.fixture(scope="module", params=["sentencepiece", "wordpiece"])
def learned(request, tmp_path_factory):
    config = TextConfig(level="subword", subword=request.param)
    vocab, codec = train_codec([clean(s, config) for s in TRAIN], 400, config)
    folder = tmp_path_factory.mktemp(request.param)
    save_codec(codec, vocab, folder, "target")
    return config, vocab, codec, folder


def _join(codec, sentences: list[str]) -> list[str]:
    tokens = codec.split(tf.constant(sentences))
    return [s.decode("utf-8") for s in codec.join(tokens).numpy()]


def test_layout_and_size(learned):
    config, vocab, _, folder = learned
    assert vocab[:4] == ["", "[UNK]", "[START]", "[END]"]
    assert 100 < len(vocab) <= 400 and len(set(vocab)) == len(vocab)
    assert (folder / "target_vocab.txt").read_text(encoding="utf-8").split("\n")[:-1] == vocab


def test_round_trip_is_exact_in_the_graph(learned):
    config, _, codec, folder = learned
    seen = [s for s in HARD if "✈" not in s]  # WordPiece: a word with an unseen char is [UNK]
    cleaned = [clean(s, config) for s in (HARD if config.subword == "sentencepiece" else seen)]
    assert _join(codec, cleaned) == cleaned
    reloaded = load_codec(config, folder, "target")
    assert _join(reloaded, cleaned) == cleaned


def test_sentencepiece_graph_agrees_with_python():
    import sentencepiece as spm

    config = TextConfig(level="subword", subword="sentencepiece", subword_model="bpe")
    _, codec = train_codec([clean(s, config) for s in TRAIN], 360, config)
    processor = spm.SentencePieceProcessor(model_proto=codec.model)
    cleaned = [clean(s, config) for s in HARD]
    graph = tokenize_many(HARD, config, codec=codec)
    assert graph == [processor.encode(s, out_type=str) for s in cleaned]
    assert _join(codec, cleaned) == [processor.decode(processor.encode(s)) for s in cleaned]
    assert any(t.startswith("<0x") for t in graph[2])  # ✈ as bytes, not [UNK]


def test_two_sentencepiece_models_stay_apart_in_a_reloaded_export(tmp_path):
    import keras

    config = TextConfig(level="subword", subword="sentencepiece")
    _, lower = train_codec([clean(s, config).lower() for s in TRAIN], 360, config)
    _, upper = train_codec([clean(s, config).upper() for s in TRAIN], 360, config)
    archive = keras.export.ExportArchive()
    for codec in (lower, upper):
        for resource in codec.trackables():
            archive.track(resource)

    def both(text):
        return {
            "lower": lower.split(tf.strings.lower(text)).to_tensor(""),
            "upper": upper.split(tf.strings.upper(text)).to_tensor(""),
        }

    archive.add_endpoint("serving_default", both, [tf.TensorSpec([None], tf.string)])
    archive.write_out(str(tmp_path / "export"), verbose=False)
    text = tf.constant(["Casa y perro, ¿gato?"])
    reloaded = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"](text)
    for name, want in both(text).items():
        assert reloaded[name].numpy().tolist() == want.numpy().tolist()


def test_joint_vocabulary_is_shared_by_both_sides(tmp_path):
    from data.files import JsonLinesWriter
    from pipelines.translation import _learn_subwords

    config = TextConfig(level="subword", joint_vocab=True, source_vocab=400)
    with JsonLinesWriter(tmp_path / "train.jsonl") as out:  # what ingest writes
        for s in TRAIN[:100]:
            out.write({"source": s, "target": s.upper(), "split": "train"})
    vocabs, codecs = _learn_subwords(config, tmp_path, seed=0)
    assert vocabs["source"] == vocabs["target"] and codecs["source"] is codecs["target"]
    assert any(t.isupper() for t in vocabs["source"]) and any(t.islower() for t in vocabs["source"])


def test_wordpiece_pieces_rebuild_words_and_mark_unknown_words():
    config = TextConfig(level="subword", subword="wordpiece")
    vocab, codec = train_codec([clean(s, config) for s in TRAIN], 400, config)
    [tokens] = tokenize_many(["Canciones rojas, ✈ y corazones."], config, codec=codec)
    assert "[UNK]" in tokens and tokens.count("[UNK]") == 1  # only the word with ✈
    assert any(t.startswith("##") for t in tokens)  # unseen inflections are pieces, not [UNK]
    assert set(tokens) <= set(vocab)


def test_unknown_sizes_and_methods_are_clear_errors():
    from data.checks import ConfigError

    with pytest.raises(ConfigError, match="text.subword.*Received: 'bpe'"):
        TextConfig(level="subword", subword="bpe")
    config = TextConfig(level="subword")
    with pytest.raises(ValueError, match="vocabulary of 200 pieces.*256 byte pieces"):
        train_codec([clean(s, config) for s in TRAIN], 200, config)


def _pairs_file(path: Path) -> Path:
    """Tab-separated pairs; every 7th line carries a Greek letter of its own (rare characters)."""
    rng = random.Random(0)
    lines = []
    for i in range(360):
        words = rng.sample(WORDS, 4)
        extra = f" {chr(0x3B1 + i // 7 % 24)}x" if i % 7 == 0 else ""
        lines.append(f"{' '.join(words)}{extra}.\t{' '.join(reversed(words))}{extra} !")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def subword_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subword")
    pairs = _pairs_file(folder / "pairs.tsv")
    run_dir = folder / "run"
    overrides = [
        *(s for s in TINY if not s.startswith("data.synthetic")),
        f"data.source=tsv:{pairs}",
        "data.val_percent=15",
        "data.test_percent=15",
        "text.level=subword",
        "text.source_vocab=400",
        "text.target_vocab=400",
    ]
    result = run_cli(
        "run",
        "translation",
        "--run-dir",
        str(run_dir),
        *(a for s in overrides for a in ("--set", s)),
    )
    return run_dir, result


def test_subword_run_end_to_end(subword_run):
    run_dir, result = subword_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["unknown_token_rate"]["test"] == {"source": 0.0, "target": 0.0}
    assert metrics["subwords_per_word"]["source"] >= 1.0
    assert "subwords per word" in result.stdout and "validation BLEU" in result.stdout
    assert 0 <= metrics["val_bleu"] <= 100
    for name in ("source.model", "target.model", "source_vocab.txt", "target_vocab.txt"):
        assert (run_dir / "vocab" / name).stat().st_size > 0
        assert (run_dir / "export" / "assets.extra" / name).stat().st_size > 0


def test_subword_vocabulary_comes_from_the_training_split_only(subword_run):
    run_dir, _ = subword_run
    split = {
        name: " ".join(
            p["source"] + " " + p["target"]
            for p in read_json_lines(run_dir / "stages" / "ingest" / f"{name}.jsonl")
        )
        for name in ("train", "validation", "test")
    }
    greek = {chr(0x3B1 + i) for i in range(24)}  # on both sides of every pair
    in_train = greek & set(split["train"])
    held_out_only = (greek & set(split["validation"] + split["test"])) - in_train
    assert in_train and held_out_only  # the data puts rare letters on both sides of the split
    vocab = (run_dir / "vocab" / "source_vocab.txt").read_text(encoding="utf-8")
    assert greek & set(vocab) == in_train


def test_subword_export_takes_raw_strings(subword_run):
    import tensorflow_text  # noqa: F401 - registers the export's ops

    run_dir, _ = subword_run
    rows = (run_dir / "stages" / "evaluate" / "translations.tsv").read_text().splitlines()[1:6]
    serve = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    got = serve(text=tf.constant([r.split("\t")[0] for r in rows]))["translation"].numpy()
    assert [t.decode() for t in got] == [r.split("\t")[2] for r in rows]
    odd = serve(text=tf.constant(["  CASA ✈ Perro  ", ""]))["translation"].numpy()
    assert isinstance(odd[0].decode("utf-8"), str) and odd[1] == b""
