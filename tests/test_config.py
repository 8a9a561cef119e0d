import pytest

from pipelines import config as cfg
from pipelines.cli import resolve_config
from pipelines.config import ConfigError


def test_parse_override_nested_yaml_values():
    assert cfg.parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}
    assert cfg.parse_override("x=[1, 2]") == {"x": [1, 2]}
    assert cfg.parse_override("x=null") == {"x": None}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        cfg.parse_override("novalue")


def test_defaults_and_overrides():
    _, config = resolve_config("speech_commands", overrides=["train.epochs=3", "model.cell=gru"])
    assert config.train.epochs == 3
    assert config.model.cell == "gru"
    assert config.optimizer.clipnorm == 1.0  # clipping is on by default


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"Unknown config key 'train.epoch'.*'train.epochs'"):
        resolve_config("speech_commands", overrides=["train.epoch=3"])
    with pytest.raises(ConfigError, match="Unknown config key 'nosection'"):
        resolve_config("speech_commands", overrides=["nosection.x=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=abc", r"train.epochs: expected int. Received: 'abc'"),
        ("train.epochs=0", r"train.epochs: expected >= 1. Received: 0"),
        ("model.cell=transformer", r"model.cell: expected one of \['gru', 'lstm', 'simple_rnn'\]"),
        (
            "model.pooling=median",
            r"model.pooling: expected one of 'last', 'mean', 'max', 'attention'",
        ),
        ("features.n_mfcc=100", r"features.n_mfcc: expected 1..features.n_mels"),
        ("data.source=nowhere:x", r"data.source: expected a URI starting with one of"),
        ("optimizer.clipnorm=-1", r"optimizer.clipnorm: expected > 0"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("speech_commands", overrides=[override])


def test_a_hop_off_the_stream_steps_is_refused_before_training():
    # the evaluate stage runs --stream, whose answers come on the stream's 20-ms steps
    with pytest.raises(
        ConfigError, match=r"detect.hop_ms: expected a multiple of the stream's step, 20 ms.*50"
    ):
        resolve_config("speech_commands", overrides=["detect.hop_ms=50"])
    assert resolve_config("speech_commands", overrides=["detect.hop_ms=40"])[1].detect.hop_ms == 40
    # a model that cannot stream answers at any hop
    sets = ["detect.hop_ms=50", "model.bidirectional=true"]
    assert resolve_config("speech_commands", overrides=sets)[1].detect.hop_ms == 50


def test_int8_is_refused_before_training_for_a_model_that_cannot_stream():
    # int8 quantizes the stream step only; the preset streams, so it may have it
    sets = ["export.tflite=true", "export.quantize=int8"]
    assert resolve_config("speech_commands", overrides=sets)[1].export.quantize == "int8"
    for setting, named in [
        ("features.streaming=false", "features.streaming: False"),
        ("features.normalize=utterance", "features.normalize: utterance"),
        ("model.bidirectional=true", "model.bidirectional: True"),
    ]:
        with pytest.raises(
            ConfigError, match=rf"export.quantize: expected none or dynamic.*{named}"
        ):
            resolve_config("speech_commands", overrides=[*sets, setting])
    # without the TFLite export the setting is inert, so it is not refused
    inert = ["features.streaming=false", "export.quantize=int8"]
    assert not resolve_config("speech_commands", overrides=inert)[1].export.tflite


def test_two_clipping_modes_rejected():
    with pytest.raises(ConfigError, match="at most one of clipnorm, clipvalue, global_clipnorm"):
        resolve_config("speech_commands", overrides=["optimizer.clipvalue=0.5"])
    _, config = resolve_config(
        "speech_commands", overrides=["optimizer.clipnorm=null", "optimizer.global_clipnorm=2"]
    )
    assert config.optimizer.global_clipnorm == 2.0 and config.optimizer.clipnorm is None


def test_preset_files_and_roundtrip(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("train:\n  epochs: 7\nmodel:\n  units: 16\n")
    pipeline, config = resolve_config(
        "fsdd", config_files=[str(extra)], overrides=["model.units=8"]
    )
    assert pipeline.name == "speech_commands"
    assert config.features.sample_rate == 8000  # from the preset
    assert config.train.epochs == 7 and config.model.units == 8  # --set wins over --config
    saved = tmp_path / "config.yaml"
    cfg.save(config, saved)
    _, again = resolve_config("speech_commands", config_files=[str(saved)])
    assert again == config


def test_unknown_pipeline_and_missing_file():
    with pytest.raises(ConfigError, match="Unknown pipeline or preset 'nope'"):
        resolve_config("nope")
    with pytest.raises(ConfigError, match="Config file not found"):
        resolve_config("speech_commands", config_files=["/does/not/exist.yaml"])


def test_every_preset_builds():
    for name in cfg.preset_names():
        resolve_config(name)


def test_command_words_are_not_booleans(tmp_path):
    """YAML 1.1 reads yes/no/on/off as booleans; the config keeps them as words."""
    path = tmp_path / "words.yaml"
    path.write_text("data:\n  commands: [yes, no, on, off]\n")
    _, config = resolve_config(
        "speech_commands", config_files=[str(path)], overrides=["data.synthetic.words=[up, on]"]
    )
    assert config.data.commands == ("yes", "no", "on", "off")
    assert config.data.synthetic.words == ("up", "on")
