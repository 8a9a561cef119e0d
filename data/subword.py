"""Subword vocabularies (SentencePiece, WordPiece): trained on the training split, run in the graph.

A *codec* turns standardized sentences into token strings and back, with TensorFlow ops only, so
the exported model keeps taking and returning raw strings. Word and character levels are
stateless codecs; a subword codec carries what it learned from the training split:

- ``sentencepiece``: a SentencePiece model (``unigram`` or ``bpe``) trained on whole sentences
  with the ``sentencepiece`` package and run with ``tensorflow_text.SentencepieceTokenizer``.
  Identity normalization and byte fallback make detokenization exact: a character the model never
  saw becomes its UTF-8 bytes (``<0xE2>``...), not ``[UNK]``.
- ``wordpiece``: WordPiece over the project's word tokens (punctuation marks split off and marked
  with ``▁`` as at word level), vocabulary learned with ``tensorflow_text``'s learner and run with
  ``tensorflow_text.FastWordpieceTokenizer``. Pieces inside a word start with ``##``; joining
  merges them back into words and then joins words exactly as the word level does. A word with a
  character outside the learned alphabet becomes ``[UNK]``.

Vocabularies keep the project's layout: ids 0..3 are ``""`` (padding), ``[UNK]``, ``[START]``,
``[END]``.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from data.registry import Registry
from data.text import END, SPECIALS, START, UNK, join_tokens, split_tokens

SUFFIX = "##"  # WordPiece's mark on pieces that continue a word


class Codec:
    """Word or character tokens: ``split`` and ``join`` of ``data.text`` (no learned state).

    Attributes:
        level: ``word`` or ``char``.
        model: bytes of a learned model that must ship with the export (None: nothing to ship).
    """

    model: bytes | None = None

    def __init__(self, level: str) -> None:
        self.level = level

    def split(self, text: tf.Tensor) -> tf.RaggedTensor:
        """``[batch]`` standardized sentences -> ragged ``[batch, tokens]`` token strings."""
        return split_tokens(text, self.level)

    def join(self, tokens: tf.RaggedTensor | tf.Tensor) -> tf.Tensor:
        """``[batch, tokens]`` token strings (specials already removed) -> ``[batch]`` sentences."""
        return join_tokens(tokens, self.level)

    def trackables(self) -> list[Any]:
        """TensorFlow resources an export must track so the codec works after reloading."""
        return []


class SentencePieceCodec(Codec):
    """SentencePiece pieces (``▁`` marks a preceding space); exact inverse via the piece ids."""

    def __init__(self, model: bytes) -> None:
        import tensorflow_text

        super().__init__("subword")
        self.model = model
        # The op's resource is shared by node name: after a SavedModel is reloaded, two unnamed
        # tokenizers (source and target) would both run whichever model was created first.
        # Naming it by the model's hash keeps different models apart.
        self.tokenizer = tensorflow_text.SentencepieceTokenizer(
            model=model,
            out_type=tf.string,
            name=f"sentencepiece_{hashlib.sha1(model).hexdigest()[:16]}",
        )

    def split(self, text: tf.Tensor) -> tf.RaggedTensor:
        return self.tokenizer.tokenize(text)

    def join(self, tokens: tf.RaggedTensor | tf.Tensor) -> tf.Tensor:
        if not isinstance(tokens, tf.RaggedTensor):
            tokens = tf.RaggedTensor.from_tensor(tokens, padding="")
        return self.tokenizer.detokenize(self.tokenizer.string_to_id(tokens))

    def trackables(self) -> list[Any]:
        return [self.tokenizer._model_resource]  # noqa: SLF001 - the tokenizer's only resource


class WordPieceCodec(Codec):
    """WordPiece pieces of the word-level tokens; joined back into words, then as words."""

    def __init__(self, vocabulary: list[str]) -> None:
        import tensorflow_text

        super().__init__("subword")
        # The tokenizer rejects an empty token: the padding slot gets a placeholder (never output).
        vocab = ["[PAD]" if t == "" else t for t in vocabulary]
        self.tokenizer = tensorflow_text.FastWordpieceTokenizer(
            vocab=vocab,
            suffix_indicator=SUFFIX,
            unknown_token=UNK,
            no_pretokenization=True,
            token_out_type=tf.string,
        )

    def split(self, text: tf.Tensor) -> tf.RaggedTensor:
        return self.tokenizer.tokenize(split_tokens(text, "word")).merge_dims(-2, -1)

    def join(self, tokens: tf.RaggedTensor | tf.Tensor) -> tf.Tensor:
        # Pieces -> words: a continuation piece loses its "##" and its space. A word never starts
        # with "##" (punctuation marks are split off one by one), so only continuations match.
        text = tf.strings.reduce_join(tokens, axis=-1, separator=" ")
        words = tf.strings.split(tf.strings.regex_replace(text, " " + SUFFIX, ""))
        return join_tokens(words, "word")

    def trackables(self) -> list[Any]:
        return [self.tokenizer]


@dataclass(frozen=True)
class SubwordMethod:
    """How one subword method learns a vocabulary and rebuilds its codec.

    Attributes:
        train: ``(sentences, size, config, seed) -> (vocabulary, model bytes or None)``.
        load: ``(vocabulary, model bytes or None) -> Codec``.
    """

    train: Callable[[Iterable[str], int, Any, int], tuple[list[str], bytes | None]]
    load: Callable[[list[str], bytes | None], Codec]


SUBWORDS: Registry[SubwordMethod] = Registry("text.subword")


def _train_sentencepiece(
    sentences: Iterable[str], size: int, config: Any, seed: int
) -> tuple[list[str], bytes]:
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buffer,
            vocab_size=size,
            model_type=config.subword_model,
            character_coverage=1.0,
            byte_fallback=True,  # unseen characters -> bytes, so nothing becomes [UNK]
            normalization_rule_name="identity",  # the text is already standardized; keep it exact
            hard_vocab_limit=False,  # a small corpus gets a smaller vocabulary, not an error
            input_sentence_size=2_000_000,  # a random sample of larger corpora (seeded above)
            shuffle_input_sentence=True,
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            pad_piece="[PAD]",
            unk_piece=UNK,
            bos_piece=START,
            eos_piece=END,
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as error:
        raise ValueError(
            f"SentencePiece could not build a vocabulary of {size} pieces: {error}. With byte "
            f"fallback a vocabulary needs 4 specials, 256 byte pieces and every character of the "
            f"training split."
        ) from error
    model = buffer.getvalue()
    processor = spm.SentencePieceProcessor(model_proto=model)
    vocabulary = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    return ["", *vocabulary[1:]], model


def _train_wordpiece(
    sentences: Iterable[str], size: int, config: Any, seed: int
) -> tuple[list[str], None]:
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

    counts: Counter = Counter()
    batch: list[str] = []

    def count(batch: list[str]) -> None:
        for row in split_tokens(tf.constant(batch), "word").to_list():
            counts.update(t.decode("utf-8") for t in row)

    for sentence in sentences:  # streamed: only the word counts stay in memory
        batch.append(sentence)
        if len(batch) == 4096:
            count(batch)
            batch = []
    if batch:
        count(batch)
    reserved = ["[PAD]", UNK, START, END]
    learned = learner.learn(
        sorted(counts.items()),
        size,
        reserved,
        lower_thresh=1,
        max_unique_chars=max(1000, size // 4),
    )
    if learned[: len(reserved)] != reserved:
        raise RuntimeError(f"Unexpected WordPiece vocabulary layout {learned[:4]}")
    return ["", *learned[1:]], None


SUBWORDS.register("sentencepiece")(
    SubwordMethod(_train_sentencepiece, lambda vocab, model: SentencePieceCodec(model))
)
SUBWORDS.register("wordpiece")(
    SubwordMethod(_train_wordpiece, lambda vocab, model: WordPieceCodec(vocab))
)


def train_codec(
    sentences: Iterable[str], size: int, config: Any, seed: int = 0
) -> tuple[list[str], Codec]:
    """Learns a ``config.subword`` vocabulary of about ``size`` tokens from ``sentences``.

    Args:
        sentences: standardized training sentences (an iterable: it is read once).
        size: vocabulary size, specials included (SentencePiece may return fewer on small data).
        config: the ``TextConfig`` (``subword``, ``subword_model``).
        seed: seed of SentencePiece's sentence sampling on corpora above 2M sentences.

    Returns:
        The vocabulary (ids 0..3 are the specials) and its codec.
    """
    method = SUBWORDS.get(config.subword)
    vocabulary, model = method.train(sentences, size, config, seed)
    if vocabulary[: len(SPECIALS)] != list(SPECIALS):
        raise RuntimeError(f"Unexpected vocabulary layout {vocabulary[:4]}")
    return vocabulary, method.load(vocabulary, model)


def model_path(directory: Path, side: str) -> Path:
    """Where a side's learned subword model is stored (``source.model`` / ``target.model``)."""
    return Path(directory) / f"{side}.model"


def save_codec(codec: Codec, vocabulary: list[str], directory: Path, side: str) -> None:
    """Writes ``SIDE_vocab.txt`` (one token per line) and, if the codec has one, ``SIDE.model``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{side}_vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    if codec.model is not None:
        model_path(directory, side).write_bytes(codec.model)


def load_codec(config: Any, directory: Path | None, side: str) -> Codec:
    """The codec of one side, as ``save_codec`` left it in ``directory`` (None: word/char only)."""
    if config.level != "subword":
        return Codec(config.level)
    if directory is None:
        raise ValueError("A subword codec needs the folder its vocabulary was saved in.")
    from data.text import read_vocabulary

    vocabulary = read_vocabulary(Path(directory) / f"{side}_vocab.txt")
    path = model_path(directory, side)
    return SUBWORDS.get(config.subword).load(
        vocabulary, path.read_bytes() if path.exists() else None
    )


def word_codec() -> Codec:
    """The word-level codec (what length limits count before a subword vocabulary exists)."""
    return Codec("word")
