"""Speech synthesis with eSpeak NG through ctypes, from the ``espeakng-loader`` wheel.

The wheel bundles ``libespeak-ng`` and its voice data, so no system package is needed. The library
keeps global state, so one process holds one ``Espeak`` at a time; synthesis is synchronous.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_CHARS_AUTO = 0
POS_CHARACTER = 1
PARAM_RATE = 1
PARAM_PITCH = 3
PARAM_RANGE = 4

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

# English dialects shipped by the wheel (lang/gmw/en*).
ENGLISH_DIALECTS = (
    "en-us",
    "en",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us-nyc",
)


class EspeakError(RuntimeError):
    """Raised when the eSpeak NG library cannot be loaded or refuses a request."""


def variant_names() -> list[str]:
    """Names of the voice variants (``voices/!v``) shipped with the wheel, sorted."""
    import espeakng_loader

    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file())


class Espeak:
    """A synchronous eSpeak NG synthesizer returning float32 waveforms."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - listed in requirements
            raise EspeakError(
                "espeakng-loader is not installed: pip install espeakng-loader"
            ) from err
        self._lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        data_path = espeakng_loader.get_data_path().encode()
        os.environ.setdefault("ESPEAK_DATA_PATH", data_path.decode())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        rate = self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {rate})")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []

        def collect(wav, num_samples, _events):  # noqa: ANN001 - ctypes callback
            if num_samples > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
            return 0

        self._callback = _SYNTH_CALLBACK(collect)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]

    def synthesize(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
    ) -> np.ndarray:
        """Speaks ``text`` and returns float32 samples in [-1, 1] at ``self.sample_rate``.

        Args:
            text: what to say.
            voice: ``dialect`` or ``dialect+variant``, e.g. ``"en-us+f3"``.
            rate: words per minute (80-450).
            pitch: base pitch, 0-100.
            pitch_range: pitch variation, 0-100.

        Returns:
            The waveform, empty only if eSpeak produced no audio.
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"Unknown eSpeak voice {voice!r}")
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        status = self._lib.espeak_Synth(
            buf, len(buf), 0, POS_CHARACTER, 0, ESPEAK_CHARS_AUTO, None, None
        )
        if status != 0:
            raise EspeakError(f"espeak_Synth failed for {text!r} with voice {voice!r} ({status})")
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return (np.concatenate(self._chunks).astype(np.float32) / 32768.0).clip(-1.0, 1.0)
