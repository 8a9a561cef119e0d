import pytest

from data.registry import Registry


def test_register_and_get():
    reg = Registry("thing")
    reg.register("a")(1)
    assert reg.get("a") == 1
    assert "a" in reg and reg.names() == ["a"]


def test_duplicate_rejected():
    reg = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="Duplicate thing name 'a'"):
        reg.register("a")(2)


def test_unknown_names_choices_and_suggests():
    reg = Registry("cell")
    reg.register("lstm")(1)
    reg.register("gru")(2)
    with pytest.raises(KeyError, match=r"Unknown cell 'lstn'.*\['gru', 'lstm'\].*'lstm'"):
        reg.get("lstn")
