"""Config sections and root config of the translation pipeline (typed, frozen)."""

from __future__ import annotations

from dataclasses import dataclass, field

from data.checks import check
from data.text import TextConfig
from data.text_sources import TextDataConfig
from models.decoding import DecodeConfig
from models.gradients import GradientConfig
from models.seq2seq import Seq2SeqConfig
from models.training import OptimizerConfig, TrainConfig
from models.tuning import TuneConfig
from pipelines.runtime import RuntimeConfig


@dataclass(frozen=True)
class TranslationEvalConfig:
    """The ``eval`` section of the translation pipeline.

    Attributes:
        samples: translations (source, reference, output) shown in the summary and metrics.json.
        attention_plots: test sentences drawn in the attention heat-map plot.
        validation_bleu: also decode the validation split and report ``val_bleu``/``val_chrf``
            (what settings are chosen by; the test split is only reported).
    """

    samples: int = 8
    attention_plots: int = 4
    validation_bleu: bool = True

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
