"""Sentence cleaning (Python, at ingestion) and tokenization (TensorFlow ops, inside the graph).

Tokenization runs in the graph so the exported model takes raw strings. Word-level tokens keep
case and apostrophes (``don't`` is one token); every punctuation mark is its own token and records
whether it was glued to its neighbours with the marker ``▁`` (``world▁.``-style: ``▁.`` is glued to
the word before it, ``¿▁`` to the word after it). Detokenization joins tokens with spaces and
removes the space on each marked side, so ``detokenize(split(s))`` gives back ``s`` with its
whitespace collapsed: "¿Dónde está?" -> ``¿▁ Dónde está ▁?`` -> "¿Dónde está?".
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from data.checks import check
from data.registry import Registry

MARK = "\u2581"
PAD, UNK, START, END = "", "[UNK]", "[START]", "[END]"
SPECIALS = (PAD, UNK, START, END)  # ids 0..3 in every vocabulary
PAD_ID, UNK_ID, START_ID, END_ID = range(4)

_WORD = r"\pL\pN\pM_'"  # RE2 (TensorFlow) classes: letters, digits, marks, underscore, apostrophe
# Python's str.isspace() set, in RE2 (whose \s alone is ASCII): NBSP and friends are spaces too.
_SPACE = r"\s\x{0b}\x{1c}-\x{1f}\x{85}\pZ"
_PUNCT = rf"[^{_WORD}{_SPACE}{MARK}]"


@dataclass(frozen=True)
class TextConfig:
    """The ``text`` config section: cleaning and tokenization of both languages.

    Attributes:
        level: ``word`` (words and punctuation marks), ``char`` (characters) or ``subword``
            (a vocabulary learned from the training split, see ``data.subword``). At ingestion,
            before a subword vocabulary exists, the length limits of a subword run count words.
        subword: ``sentencepiece`` or ``wordpiece`` (with ``level: subword``).
        subword_model: the SentencePiece algorithm, ``unigram`` or ``bpe``.
        joint_vocab: one subword vocabulary learned from both languages (size ``source_vocab``),
            instead of one per language.
        lowercase: lower-case both sides (off by default: output keeps its case).
        lowercase_source: lower-case the source side only (fewer, better-trained source words;
            the output keeps its case).
        unicode_form: Unicode normalization applied at ingestion (NFC, NFKC, NFD, NFKD).
        strip_punctuation: drop punctuation marks instead of keeping them as tokens.
        max_source_tokens: pairs whose source is longer are dropped (counted, with the reason).
        max_target_tokens: same for the target.
        source_vocab: size limit of the source vocabulary, special tokens included (for a
            subword level, the size of the learned vocabulary).
        target_vocab: size limit of the target vocabulary.
        min_count: tokens seen fewer times in the training split map to ``[UNK]``.
    """

    level: str = "word"
    subword: str = "sentencepiece"
    subword_model: str = "unigram"
    joint_vocab: bool = False
    lowercase: bool = False
    lowercase_source: bool = False
    unicode_form: str = "NFC"
    strip_punctuation: bool = False
    max_source_tokens: int = 40
    max_target_tokens: int = 40
    source_vocab: int = 16000
    target_vocab: int = 12000
    min_count: int = 1

    def __post_init__(self) -> None:
        from data.subword import SUBWORDS

        levels = [*SPLITTERS.names(), "subword"]
        check(self.level in levels, "text.level", self.level, f"one of {levels}")
        check(self.subword in SUBWORDS, "text.subword", self.subword, f"one of {SUBWORDS.names()}")
        check(
            self.subword_model in ("unigram", "bpe"),
            "text.subword_model",
            self.subword_model,
            "unigram or bpe",
        )
        check(
            self.unicode_form in ("NFC", "NFKC", "NFD", "NFKD"),
            "text.unicode_form",
            self.unicode_form,
            "NFC, NFKC, NFD or NFKD",
        )
        for key in ("max_source_tokens", "max_target_tokens", "min_count"):
            check(getattr(self, key) >= 1, f"text.{key}", getattr(self, key), ">= 1")
        for key in ("source_vocab", "target_vocab"):
            value = getattr(self, key)
            check(value > len(SPECIALS), f"text.{key}", value, f"> {len(SPECIALS)}")


_SPACE_PY = re.compile(r"\s+")


def _is_word_char(char: str) -> bool:
    r"""Python twin of ``_WORD`` (letters, digits and combining marks of any script, ``_``, ``'``).

    Python's ``\w`` leaves out combining marks, so an NFD "está" would lose its accent.
    """
    return unicodedata.category(char)[0] in "LNM" or char in "_'"


def _strip_punctuation(text: str) -> str:
    return "".join(c if c.isspace() or _is_word_char(c) else " " for c in text)


def lowercases(config: TextConfig, side: str) -> bool:
    """Whether ``side`` (``source`` or ``target``) is lower-cased."""
    return config.lowercase or (side == "source" and config.lowercase_source)


def clean(sentence: str, config: TextConfig, side: str = "target") -> str:
    """Ingestion-time cleaning: Unicode normalization, whitespace, optional case and punctuation."""
    text = unicodedata.normalize(config.unicode_form, sentence).replace(MARK, " ")
    if lowercases(config, side):
        text = text.lower()
    if config.strip_punctuation:
        text = _strip_punctuation(text)
    return _SPACE_PY.sub(" ", text).strip()


# ------------------------------------------------------------- in-graph tokenization

SPLITTERS: Registry[tuple[Callable, Callable]] = Registry("text level")


def _split_words(text: tf.Tensor) -> tf.RaggedTensor:
    t = tf.strings.regex_replace(text, MARK, " ")
    t = tf.strings.regex_replace(t, rf"([{_WORD}])({_PUNCT})", rf"\1 {MARK}\2")
    t = tf.strings.regex_replace(t, rf"({_PUNCT})([{_WORD}])", rf"\1{MARK} \2")
    # Two passes: a global replace does not see overlapping pairs ("?!." needs both).
    for _ in range(2):
        t = tf.strings.regex_replace(t, rf"({_PUNCT})({_PUNCT})", rf"\1{MARK} {MARK}\2")
    return tf.strings.split(t)


def _join_words(tokens: tf.RaggedTensor | tf.Tensor) -> tf.Tensor:
    t = tf.strings.reduce_join(tokens, axis=-1, separator=" ")
    t = tf.strings.regex_replace(t, " " + MARK, "")
    t = tf.strings.regex_replace(t, MARK + " ", "")
    return tf.strings.strip(tf.strings.regex_replace(t, MARK, ""))


def _split_chars(text: tf.Tensor) -> tf.RaggedTensor:
    t = tf.strings.regex_replace(tf.strings.strip(text), r"\s+", MARK)
    return tf.strings.unicode_split(t, "UTF-8")


def _join_chars(tokens: tf.RaggedTensor | tf.Tensor) -> tf.Tensor:
    t = tf.strings.reduce_join(tokens, axis=-1)
    return tf.strings.strip(tf.strings.regex_replace(t, MARK, " "))


SPLITTERS.register("word")((_split_words, _join_words))
SPLITTERS.register("char")((_split_chars, _join_chars))


def split_tokens(text: tf.Tensor, level: str) -> tf.RaggedTensor:
    """Splits a ``[batch]`` string tensor into ragged tokens (graph ops only)."""
    return SPLITTERS.get(level)[0](text)


def join_tokens(tokens: tf.RaggedTensor | tf.Tensor, level: str) -> tf.Tensor:
    """Inverse of ``split_tokens``: ``[batch, tokens]`` strings -> ``[batch]`` sentences."""
    return SPLITTERS.get(level)[1](tokens)


def standardize(text: tf.Tensor, config: TextConfig, side: str = "target") -> tf.Tensor:
    """The graph twin of ``clean``: the same normalization, case, punctuation and spaces.

    Unicode normalization is ``tensorflow_text.normalize_utf8`` (ICU), so a SavedModel that
    calls this takes text in any normalization form; load it after ``import tensorflow_text``,
    which registers the op.
    """
    import tensorflow_text

    text = tensorflow_text.normalize_utf8(text, config.unicode_form)
    text = tf.strings.regex_replace(text, MARK, " ")
    if lowercases(config, side):
        text = tf.strings.lower(text, encoding="utf-8")
    if config.strip_punctuation:
        text = tf.strings.regex_replace(text, _PUNCT, " ")
    return tf.strings.strip(tf.strings.regex_replace(text, f"[{_SPACE}]+", " "))


def tokenize_many(
    sentences: list[str],
    config: TextConfig,
    side: str = "target",
    batch: int = 4096,
    codec: Any = None,
) -> list[list[str]]:
    """Tokens of each sentence, with the same graph ops the model uses.

    ``codec`` (a ``data.subword.Codec``) splits; by default, the word or character splitter of
    ``config.level``, and words for a subword level (whose vocabulary is learned later).
    """
    if codec is not None:
        split = codec.split
    else:
        split = SPLITTERS.get("word" if config.level == "subword" else config.level)[0]
    out: list[list[str]] = []
    for start in range(0, len(sentences), batch):
        text = standardize(tf.constant(sentences[start : start + batch]), config, side)
        ragged = split(text)
        out.extend([[t.decode() for t in row] for row in ragged.to_list()])
    return out


def build_vocabulary(token_lists: Iterable[list[str]], size: int, min_count: int) -> list[str]:
    """The ``size - 4`` most frequent tokens seen at least ``min_count`` times, after the specials.

    Ties are broken alphabetically so the vocabulary is deterministic.
    """
    return vocabulary_from_counts(
        Counter(t for tokens in token_lists for t in tokens), size, min_count
    )


def vocabulary_from_counts(counts: Counter, size: int, min_count: int) -> list[str]:
    """``build_vocabulary`` from token counts already made (e.g. a batch at a time)."""
    ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    return [*SPECIALS, *ranked[: size - len(SPECIALS)]]


def encode(token_lists: list[list[str]], vocabulary: list[str]) -> list[list[int]]:
    """Token ids (unknown tokens -> ``UNK_ID``), no start/end tokens."""
    index = {t: i for i, t in enumerate(vocabulary)}
    return [[index.get(t, UNK_ID) for t in tokens] for tokens in token_lists]


def read_vocabulary(path: Path) -> list[str]:
    """A vocabulary file: one token per line, line number = id (line 1 is the empty padding)."""
    return path.read_text(encoding="utf-8").split("\n")[:-1]
