"""Cleaning, in-graph tokenization and vocabularies."""

from __future__ import annotations

import unicodedata

import pytest
import tensorflow as tf

from data.checks import ConfigError
from data.text import (
    SPECIALS,
    UNK_ID,
    TextConfig,
    build_vocabulary,
    clean,
    encode,
    join_tokens,
    split_tokens,
    standardize,
    tokenize_many,
)

SENTENCES = [
    "¿Dónde está el baño?",
    "Hello, world...",
    "I don't know!?",
    'Él dijo: "¡Hola!"',
    "2021-03-03",
    "Tom's 3.5% (approx.)",
    "Ça va? Très bien.",
]


@pytest.mark.parametrize("level", ["word", "char"])
def test_split_then_join_gives_the_sentence_back(level):
    tokens = split_tokens(tf.constant(SENTENCES), level)
    back = [s.decode() for s in join_tokens(tokens, level).numpy()]
    assert back == SENTENCES


def test_word_tokens_keep_case_apostrophes_and_mark_glued_punctuation():
    tokens = tokenize_many(["¿Dónde está?", "I don't know."], TextConfig())
    assert tokens[0] == ["¿\u2581", "Dónde", "está", "\u2581?"]
    assert tokens[1] == ["I", "don't", "know", "\u2581."]


def test_join_collapses_whitespace():
    tokens = split_tokens(tf.constant(["  a   b , c "]), "word")
    assert join_tokens(tokens, "word").numpy()[0].decode() == "a b , c"  # spacing kept


def test_clean_normalizes_unicode_and_options():
    decomposed = unicodedata.normalize("NFD", "  Él   está\tAQUÍ!  ")
    assert clean(decomposed, TextConfig()) == "Él está\tAQUÍ!".replace("\t", " ")
    assert clean(decomposed, TextConfig(lowercase=True)) == "él está aquí!"
    assert clean("Hola, ¿qué tal?", TextConfig(strip_punctuation=True)) == "Hola qué tal"


def test_graph_standardize_matches_clean():
    config = TextConfig(lowercase=True, strip_punctuation=True)
    sentence = "Él DIJO: ¡Hola, Ñandú!"
    graph = standardize(tf.constant([sentence]), config).numpy()[0].decode()
    assert graph == clean(sentence, config)


@pytest.mark.parametrize("form", ["NFC", "NFD"])
@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize("lowercase", [False, True])
def test_graph_and_python_cleaning_agree_on_any_normalization(form, strip, lowercase):
    """The graph normalizes itself, keeps combining marks and treats Unicode spaces as spaces."""
    sentences = [
        "¿Dónde está el niño?",
        "Él DIJO: ¡Hola, Ñandú!",
        "Ça\u00a0coûte 3\u202f€, n'est-ce pas ?",  # no-break spaces
        "Ελληνικά και русский\u3000текст",
        "  spaces\t\tand tabs  ",
        "",
    ]
    config = TextConfig(lowercase=lowercase, strip_punctuation=strip, unicode_form="NFC")
    given = [unicodedata.normalize(form, s) for s in sentences]
    graph = [t.decode() for t in standardize(tf.constant(given), config).numpy()]
    python = [clean(s, config) for s in given]
    assert graph == python
    assert graph == [clean(s, config) for s in sentences]  # NFD input ends up as NFC input does
    if strip:
        assert python[0].endswith("está el niño")  # accents kept, "?" stripped


def test_vocabulary_specials_limit_min_count_and_ties():
    lists = [["b", "a", "a"], ["c", "b", "a"], ["d"]]
    vocab = build_vocabulary(lists, size=6, min_count=1)
    assert vocab[:4] == list(SPECIALS)
    assert vocab[4:] == ["a", "b"]  # most frequent first, size limit counts the specials
    assert build_vocabulary(lists, size=100, min_count=2)[4:] == ["a", "b"]
    assert build_vocabulary(lists, size=100, min_count=1)[6:] == ["c", "d"]  # ties: alphabetical
    assert encode([["a", "zzz"]], vocab) == [[4, UNK_ID]]


def test_text_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="text.level"):
        TextConfig(level="bpe")
    with pytest.raises(ConfigError, match="text.source_vocab"):
        TextConfig(source_vocab=3)
