"""A user's check of a speech export on recordings made from one speaker's clips.

Three checks, on recordings the way a microphone delivers them (background noise around the
words):

- the export itself (``serving_default``, or ``classify.tflite``) on every clip of the speaker as
  stored, then on each clip at a random place in a window of white noise at -50 to -35 dBFS
  (RMS), the window being the export's ``clip_seconds``: both accuracies and their difference;
- through the real CLI at 16 kHz, ``run.py predict`` on files of a few seconds, each with one word at a random place inside
  noise at -50 to -35 dBFS (RMS): the accuracy of its answers;
- ``run.py detect`` (and ``detect --stream`` if the export streams) on minutes of words with 1-3 s
  pauses over one background noise: recall (right label on the word), wrong labels and false
  alarms a minute, scored like the evaluate stage's ``stream`` figures.

The clips are FSDD-style files (``{label}_{speaker}_{take}.wav``) of one speaker. Use it to
measure an export on its test speaker, never to choose settings on it.

Usage: python benchmarks/recordings_check.py EXPORT_DIR [--clips DIR] [--speaker george]
    [--noise DIR] [--window 500] [--predict 200] [--detect 80] [--seconds 3] [--seed 0]
Writes ``runs/benchmarks/recordings_check.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.audio import load_audio  # noqa: E402
from data.augment import place_in_window  # noqa: E402
from data.long_recording import build_recording  # noqa: E402
from models.detection import Event, score_events  # noqa: E402

RATE = 16000  # what a microphone delivers; the CLI resamples to the export's rate
SHARED = ROOT.parent / "shared" / "data"


def cli(*args: str) -> list[dict]:
    """``run.py ARGS``; its JSON lines."""
    done = subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"run.py {args[0]} failed ({done.returncode}):\n{done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def speaker_clips(folder: Path, speaker: str) -> list[tuple[Path, str]]:
    """The speaker's clips and labels (the file name's first field), sorted."""
    paths = sorted(folder.glob(f"*_{speaker}_*.wav"))
    if not paths:
        raise SystemExit(f"--clips {folder}: no {{label}}_{speaker}_{{take}}.wav files")
    return [(p, p.name.split("_")[0]) for p in paths]


def check_window(export: Path, clips, n: int, rng) -> dict:
    """The export's accuracy on clips as stored, and on each in a window of white noise."""
    from models.serving import load_speech_model

    model = load_speech_model(export)
    picks = rng.choice(len(clips), size=min(n, len(clips)), replace=False)
    labels = [clips[i][1] for i in picks]
    waves = [load_audio(str(clips[i][0]), model.rate) for i in picks]
    windows = [place_in_window(y, model.window, [], rng) for y in waves]  # [] = white noise

    def accuracy(batch: list[np.ndarray]) -> float:
        right = 0
        for y, label in zip(batch, labels, strict=True):  # one clip per call, as a client sends it
            probs = model.classify(y[None])[0]
            right += model.labels[int(np.argmax(probs))] == label
        return round(right / len(batch), 4)

    stored, windowed = accuracy(waves), accuracy(windows)
    return {
        "clips": len(picks),
        "as_stored": stored,
        "white_noise_window": windowed,
        "points_lost": round(100 * (stored - windowed), 1),
    }


def check_predict(export, clips, noises, n, seconds, rng, out: Path) -> dict:
    picks = rng.choice(len(clips), size=min(n, len(clips)), replace=False)
    files, truth = [], []
    for k, i in enumerate(picks):
        path, label = clips[i]
        y = place_in_window(load_audio(str(path), RATE), int(seconds * RATE), noises, rng)
        files.append(out / f"predict_{k:04d}_{label}.wav")
        _write(files[-1], y)
        truth.append(label)
    answers = cli("predict", str(export), *map(str, files))
    got = [a.get("label") for a in answers]
    right = sum(g == t for g, t in zip(got, truth, strict=True))
    return {"files": len(files), "seconds_each": seconds, "accuracy": round(right / len(files), 4)}


def check_detect(export, clips, noise, n, rng, out: Path, stream: bool) -> dict:
    picks = rng.choice(len(clips), size=min(n, len(clips)), replace=False)
    words = [(load_audio(str(clips[i][0]), RATE), clips[i][1]) for i in picks]
    y, placed = build_recording(words, RATE, [noise], rng, (1.0, 3.0), (-40.0, -40.0))
    path = out / "detect.wav"
    _write(path, y)
    report = {}
    for mode in ("sliding", "stream") if stream else ("sliding",):
        flags = ["--stream"] if mode == "stream" else []
        found = cli("detect", *flags, str(export), str(path))
        events = [Event(e["label"], e["start"], e["end"], e["score"], e["end"]) for e in found]
        scores = score_events(events, placed, (), y.size / RATE)
        scores.pop("mean_delay_seconds")  # the CLI prints where an event is, not when it fired
        scores["false_alarms_per_minute"] = round(scores["false_alarms"] / (y.size / RATE) * 60, 2)
        report[mode] = scores
    return report


def _write(path: Path, y: np.ndarray) -> None:
    import soundfile

    soundfile.write(path, np.clip(y, -1, 1), RATE, subtype="PCM_16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="an export folder (SavedModel or tflite/)")
    parser.add_argument("--clips", type=Path, default=SHARED / "fsdd" / "recordings")
    parser.add_argument("--speaker", default="george", help="the export's test speaker")
    parser.add_argument(
        "--noise", type=Path, default=SHARED / "speech_commands_subset" / "_background_noise_"
    )
    parser.add_argument("--window", type=int, default=500, help="clips for the window check")
    parser.add_argument("--predict", type=int, default=200, help="files for the predict check")
    parser.add_argument("--detect", type=int, default=80, help="words in the detect recording")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a predict file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    clips = speaker_clips(args.clips, args.speaker)
    noise_files = sorted(args.noise.glob("*.wav"))
    if not noise_files:
        raise SystemExit(f"--noise {args.noise}: no .wav files")
    noises = [load_audio(str(p), RATE) for p in noise_files]
    dishes = [n for p, n in zip(noise_files, noises, strict=True) if "dishes" in p.name]
    meta_path = args.export / "metadata.json"  # a TFLite folder's; a SavedModel's is in assets
    if not meta_path.exists():
        meta_path = args.export / "assets.extra" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        report = {
            "export": str(args.export),
            "speaker": args.speaker,
            # its own generator, so the other checks draw what they drew before it existed
            "window": check_window(
                args.export, clips, args.window, np.random.default_rng([args.seed, 1])
            ),
            "predict": check_predict(
                args.export, clips, noises, args.predict, args.seconds, rng, Path(tmp)
            ),
            "detect": check_detect(
                args.export,
                clips,
                (dishes or noises)[0],
                args.detect,
                rng,
                Path(tmp),
                bool(meta.get("stream", {}).get("available")),
            ),
        }
    print(json.dumps(report, indent=1))
    out = ROOT / "runs" / "benchmarks" / "recordings_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
