"""The built-in speech data: command words spoken by eSpeak NG voices, in noise.

Every eSpeak voice variant is one "speaker". Variants are split between train, validation and
test by a hash, so the test accuracy measures how well the model handles voices it never heard.
Each clip gets a random English dialect, speed and pitch, a random position in a one-second window,
and background noise at a random SNR. Generation is deterministic for a seed and cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from data.augment import colored_noise, mix_at_snr
from data.clips import UNKNOWN, Clip, SourceListing, hash_percent

SAMPLE_RATE = 16000
CLIP_SECONDS = 1.0
VERSION = 2  # bump when the generator's output changes, to invalidate caches
SPLIT_FRACTIONS = {"test": 0.15, "validation": 0.15}


def voice_splits(variants: list[str], seed: int) -> dict[str, str]:
    """Assigns each voice variant to a split, by a seeded hash (at least one voice per split)."""
    order = sorted(variants, key=lambda v: hash_percent(f"{seed}:{v}"))
    n_test = max(1, round(len(order) * SPLIT_FRACTIONS["test"]))
    n_val = max(1, round(len(order) * SPLIT_FRACTIONS["validation"]))
    splits = {}
    for i, variant in enumerate(order):
        splits[variant] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    return splits


def _noise_bank(rng: np.random.Generator, seconds: float = 20.0) -> dict[str, np.ndarray]:
    """Background noises: white, pink, brown, and mains hum with harmonics over pink noise."""
    n = int(SAMPLE_RATE * seconds)
    t = np.arange(n) / SAMPLE_RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 6))
    hum = hum / np.sqrt(np.mean(hum**2)) + 0.5 * colored_noise(n, rng, 1.0)
    return {
        "white_noise": colored_noise(n, rng, 0.0),
        "pink_noise": colored_noise(n, rng, 1.0),
        "brown_noise": colored_noise(n, rng, 2.0),
        "hum": (hum / np.sqrt(np.mean(hum**2))).astype(np.float32),
    }


def _place(word: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Puts ``word`` at a random offset in a one-second window."""
    n = int(SAMPLE_RATE * CLIP_SECONDS)
    word = word[:n]
    start = int(rng.integers(0, n - word.size + 1))
    out = np.zeros(n, np.float32)
    out[start : start + word.size] = word
    return out


def generate(config, out_root: Path, seed: int) -> SourceListing:  # noqa: ANN001 - SyntheticConfig
    """Generates (or reuses) the synthetic clips and returns their listing.

    Args:
        config: a ``data.speech_sources.SyntheticConfig``.
        out_root: cache folder; the set is written under a key of its settings and seed.
        seed: random seed; the same seed gives the same clips.
    """
    import librosa
    import soundfile
    from rich.progress import track

    from data.espeak import ENGLISH_DIALECTS, Espeak, variant_names

    key = hashlib.sha1(
        json.dumps({"config": asdict(config), "seed": seed, "v": VERSION}, sort_keys=True).encode()
    ).hexdigest()[:16]
    folder = out_root / key
    manifest = folder / "manifest.json"
    if manifest.is_file():
        return _listing(folder, json.loads(manifest.read_text()))

    variants = variant_names()
    if config.voices > len(variants):
        raise ValueError(
            f"data.synthetic.voices: expected at most {len(variants)} (the eSpeak variants "
            f"shipped). Received: {config.voices}"
        )
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(variants, size=config.voices, replace=False).tolist())
    splits = voice_splits(chosen, seed)
    # A private folder per process: concurrent generators (e.g. tuning workers) never share one.
    tmp = out_root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "_background_noise_").mkdir(parents=True)
    noises = _noise_bank(rng)
    for name, noise in noises.items():
        soundfile.write(tmp / "_background_noise_" / f"{name}.wav", noise * 0.3, SAMPLE_RATE)

    jobs = []
    for variant in chosen:
        for word, label in zip(config.words, config.labels or config.words, strict=True):
            jobs += [(variant, word, label, take) for take in range(config.takes)]
        picks = (
            rng.choice(len(config.unknown_words), size=config.unknown_takes, replace=False)
            if config.unknown_words and config.unknown_takes
            else []
        )
        jobs += [(variant, config.unknown_words[i], UNKNOWN, t) for t, i in enumerate(picks)]

    engine = Espeak()
    entries = []
    noise_list = list(noises.values())
    for variant, word, label, take in track(
        jobs, description="Synthesizing speech", transient=True
    ):
        dialect = ENGLISH_DIALECTS[int(rng.integers(len(ENGLISH_DIALECTS)))]
        audio = engine.synthesize(
            word,
            voice=f"{dialect}+{variant}",
            rate=int(rng.integers(120, 261)),
            pitch=int(rng.integers(20, 81)),
            pitch_range=int(rng.integers(20, 81)),
        )
        if audio.size == 0:
            continue  # counted below: the manifest only lists clips that were produced
        audio = librosa.resample(audio, orig_sr=engine.sample_rate, target_sr=SAMPLE_RATE)
        clip = _place(audio * 10 ** (rng.uniform(-12, 0) / 20), rng)
        noise = noise_list[int(rng.integers(len(noise_list)))]
        start = int(rng.integers(0, noise.size - clip.size))
        snr = rng.uniform(config.snr_db_min, config.snr_db_max)
        clip = np.clip(mix_at_snr(clip, noise[start : start + clip.size], snr), -1, 1)
        name = f"{label}/{variant}_nohash_{word}_{take}.wav"
        (tmp / label).mkdir(exist_ok=True)
        soundfile.write(tmp / name, clip, SAMPLE_RATE, subtype="PCM_16")
        entries.append(
            {
                "path": name,
                "label": label,
                "speaker": variant,
                "split": splits[variant],
                "take": str(take),
                "dialect": dialect,
                "word": word,
            }
        )
    data = {
        "clips": entries,
        "noise": sorted(f"_background_noise_/{n}.wav" for n in noises),
        "requested": len(jobs),
    }
    (tmp / "manifest.json").write_text(json.dumps(data, indent=1))
    try:
        tmp.rename(folder)  # atomic; fails if another process published the same set first
    except OSError:
        if manifest.is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return _listing(folder, json.loads(manifest.read_text()))  # the winner's, identical
        shutil.rmtree(folder)  # an incomplete folder from an older version: replace it
        tmp.rename(folder)
    return _listing(folder, data)


def _listing(folder: Path, data: dict) -> SourceListing:
    from data.clips import Rejected

    listing = SourceListing(noise_files=[str(folder / p) for p in data["noise"]])
    for entry in data["clips"]:
        listing.clips.append(
            Clip(
                str(folder / entry["path"]),
                entry["label"],
                entry["speaker"],
                entry["split"],
                entry["take"],
            )
        )
    missing = data["requested"] - len(data["clips"])
    if missing:
        listing.rejected.append(Rejected("synthetic", f"{missing} words produced no audio"))
    return listing
