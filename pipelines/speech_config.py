"""Config sections and root config of the speech-command pipeline (typed, frozen)."""

from __future__ import annotations

from dataclasses import dataclass, field

from data.audio import FeatureConfig
from data.augment import AugmentConfig
from data.checks import check
from data.speech_sources import (
    DataConfig,
)
from models.classifier import ModelConfig
from models.detection import DetectorConfig
from models.gradients import GradientConfig
from models.training import OptimizerConfig, TrainConfig
from models.tuning import TuneConfig
from pipelines.runtime import RuntimeConfig


@dataclass(frozen=True)
class EvalConfig:
    """The ``eval`` config section.

    Attributes:
        misclassified: how many misclassified test clips to list in metrics.json.
        batch_size: batch size for evaluation.
        stream_clips: test clips laid end to end, with pauses of background noise, into the long
            recording that the stream evaluation runs the detector on (0 = no stream evaluation).
    """

    misclassified: int = 10
    batch_size: int = 128
    stream_clips: int = 200

    def __post_init__(self) -> None:
        check(self.misclassified >= 0, "eval.misclassified", self.misclassified, ">= 0")
        check(self.batch_size >= 1, "eval.batch_size", self.batch_size, ">= 1")
        check(self.stream_clips >= 0, "eval.stream_clips", self.stream_clips, ">= 0")


@dataclass(frozen=True)
class ExportConfig:
    """The ``export`` config section.

    Attributes:
        enabled: write the SavedModel to ``RUN_DIR/export``.
        top_k: how many alternatives ``predict`` prints.
        tflite: also write ``RUN_DIR/export/tflite/`` (``classify.tflite``, ``stream_step.tflite``
            for a causal model, ``metadata.json``); ``run.py export RUN_DIR --format tflite``
            sets it.
        quantize: TFLite weights and activations: ``none`` (float32), ``dynamic`` (int8 weights)
            or ``int8`` (int8 weights and activations in the stream step's learned layers,
            calibrated on validation audio; the front end stays float).
        check_clips: test clips the TFLite files are checked on against the SavedModel.
    """

    enabled: bool = True
    top_k: int = 3
    tflite: bool = False
    quantize: str = "none"
    check_clips: int = 200

    def __post_init__(self) -> None:
        from models.tflite import QUANTIZATIONS

        check(self.top_k >= 1, "export.top_k", self.top_k, ">= 1")
        check(
            self.quantize in QUANTIZATIONS,
            "export.quantize",
            self.quantize,
            f"one of {list(QUANTIZATIONS)}",
        )
        check(self.check_clips >= 1, "export.check_clips", self.check_clips, ">= 1")


@dataclass(frozen=True)
class SpeechConfig:
    """Root config of the ``speech_commands`` pipeline."""

    pipeline: str = "speech_commands"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    gradients: GradientConfig = field(default_factory=GradientConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    detect: DetectorConfig = field(default_factory=DetectorConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def __post_init__(self) -> None:
        # a hop longer than the window would leave audio unheard (refused before any training)
        self.detect.check_window(self.features.clip_seconds)
        if self.causal:  # the evaluate stage runs --stream: its hop is checked here, not then
            from data.audio import feature_shape
            from pipelines.detect import RunSchedule

            shape, rate = feature_shape(self.features), self.features.sample_rate
            stream = self.detect.for_stream()
            step_ms = 1000 * shape.hop_length / rate
            check(  # named in the config's own terms; RunSchedule.of says it in samples
                stream.hop_samples(rate) % shape.hop_length == 0,
                "detect.hop_ms",
                self.detect.hop_ms,
                f"a multiple of the stream's step, {step_ms:g} ms (features.stride_ms), for a "
                "model that streams: the evaluate stage runs detect --stream",
            )
            RunSchedule.of(
                shape.hop_length,
                stream.listen_samples(rate, shape.clip_samples),
                stream.stream_overlap,
                stream.hop_samples(rate),
            )
        if self.export.tflite and self.export.quantize == "int8":
            # int8 quantizes the stream step only: refused before training, not after it
            check(
                self.causal,
                "export.quantize",
                self.export.quantize,
                "none or dynamic for a model that cannot stream (features.streaming: "
                f"{self.features.streaming}, features.normalize: {self.features.normalize}, "
                f"model.bidirectional: {self.model.bidirectional}); "
                "int8 quantizes the stream step only",
            )

    @property
    def causal(self) -> bool:
        """Whether the model these settings build can stream (``models.streaming``'s checks)."""
        return (
            self.features.streaming
            and not self.model.bidirectional
            and self.features.normalize not in ("utterance", "utterance_var")
        )
