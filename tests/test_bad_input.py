"""Bad and odd input, each case a real file: readable-but-odd input is converted, unusable input is
skipped, listed with its reason and counted, and too much of it stops the run before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pipelines.cli import resolve_config
from pipelines.config import ConfigError
from pipelines.runner import run_pipeline
from tests.conftest import tone


def _speech_config(source: str, cache: Path, *overrides: str):
    return resolve_config(
        "speech_commands",
        overrides=[
            f"data.source={source}",
            f"runtime.cache_dir={cache}",
            "data.silence_percent=0",
            "augment.copies=0",
            "model.units=8",
            *overrides,
        ],
    )


def _good_clips(folder: Path, takes: int = 6) -> None:
    rng = np.random.default_rng(0)
    for label, freq in (("low", 300), ("high", 2000)):
        for speaker in ("s1", "s2", "s3", "s4"):
            for take in range(takes):
                y = tone(freq * (1 + 0.03 * rng.standard_normal()), 0.5, 16000)
                soundfile.write(folder / f"{label}_{speaker}_{take}.wav", y, 16000)


def _odd_files(folder: Path) -> dict[str, str | None]:
    """Writes odd files; returns name -> expected rejection reason (None: converted and kept)."""
    y = tone(300, 0.5, 16000)
    soundfile.write(folder / "low_s1_50.wav", np.stack([y, 0.5 * y], axis=1), 16000)  # stereo
    soundfile.write(folder / "low_s1_51.wav", y, 16000, subtype="PCM_U8")  # 8-bit
    soundfile.write(folder / "low_s1_52.wav", y, 16000, subtype="PCM_24")  # 24-bit
    soundfile.write(folder / "low_s1_53.wav", y, 16000, subtype="FLOAT")  # 32-bit float
    soundfile.write(folder / "low_s2_54.wav", tone(300, 0.5, 8000), 8000)  # 8 kHz
    soundfile.write(folder / "low_s2_55.wav", tone(300, 0.5, 44100), 44100)  # 44.1 kHz
    soundfile.write(folder / "low_s2_56.flac", y, 16000, format="FLAC")
    soundfile.write(folder / "low_s2_57.ogg", y, 16000, format="OGG", subtype="VORBIS")
    soundfile.write(folder / "low_s é ü_58.wav", y, 16000)  # spaces and non-ASCII
    (folder / "high_s1_60.wav").write_bytes(b"")  # zero bytes
    full = folder / "high_s1_61.wav"
    soundfile.write(full, tone(2000, 0.5, 16000), 16000)
    (folder / "high_s1_62.wav").write_bytes(full.read_bytes()[:30])  # truncated header
    (folder / "high_s1_63.wav").write_text("this is not audio\n" * 20)  # text named .wav
    soundfile.write(folder / "high_s2_64.wav", np.zeros(8000, np.float32), 16000)  # silence
    (folder / "notes.txt").write_text("not a clip")
    return {
        "low_s1_50.wav": None,
        "low_s1_51.wav": None,
        "low_s1_52.wav": None,
        "low_s1_53.wav": None,
        "low_s2_54.wav": None,
        "low_s2_55.wav": None,
        "low_s2_56.flac": None,
        "low_s2_57.ogg": None,
        "low_s é ü_58.wav": None,
        "high_s1_60.wav": "empty file (0 bytes)",
        "high_s1_62.wav": "unreadable audio",
        "high_s1_63.wav": "unreadable audio",
        "high_s2_64.wav": "audio is all zeros",
        "notes.txt": "not an audio file",
    }


def test_odd_audio_is_converted_and_unusable_audio_listed(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    _good_clips(folder, takes=12)
    expected = _odd_files(folder)
    pipeline, config = _speech_config(
        f"fsdd:{folder}",
        tmp_path / "cache",
        "data.split=holdout",
        "data.test_speakers=[s4]",
        "data.val_speakers=[s3]",
    )
    report = run_pipeline(pipeline, config, tmp_path / "run", until="features")
    stages = tmp_path / "run" / "stages"
    reasons = {}
    for name in ("ingest", "features"):
        for item in json.loads((stages / name / "rejected.json").read_text()):
            reasons[Path(item["item"]).name] = item["reason"]
    kept = {
        Path(c["path"]).name for c in json.loads((stages / "ingest" / "clips.json").read_text())
    }
    for name, reason in expected.items():
        if reason is None:
            assert name in kept and name not in reasons, name
        else:
            assert reason in reasons.get(name, ""), (name, reasons.get(name))
    # 4 unusable audio files of 96 + 13: counted, under the 5% limit; notes.txt is not audio
    assert report.metrics["rejected"] == {"ingest": 4, "features": 1}
    # s1/s2's 48 tones, the 9 odd-but-readable clips and high_s1_61 (the truncated one's source)
    assert report.metrics["examples"]["train"] == 48 + 9 + 1


def test_too_many_unusable_files_stop_before_training(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    _good_clips(folder, takes=3)  # 24 good clips
    for i in range(3):  # 3 of 27 = 11% > 5%
        (folder / f"low_s1_{90 + i}.wav").write_bytes(b"RIFF....WAVEjunk")
    pipeline, config = _speech_config(
        f"fsdd:{folder}",
        tmp_path / "cache",
        "data.split=holdout",
        "data.test_speakers=[s4]",
        "data.val_speakers=[s3]",
    )
    with pytest.raises(
        ValueError, match=r"3 of 27 audio files \(11.1%\) are unusable.*max_rejected_percent=5: "
    ):
        run_pipeline(pipeline, config, tmp_path / "run")
    assert not (tmp_path / "run" / "stages" / "features").exists()  # stopped at ingest


def test_speech_commands_layout_empty_label_folder_and_missing_command(tmp_path):
    root = tmp_path / "sc"
    for word in ("yes", "no"):
        (root / word).mkdir(parents=True)
        for speaker in ("aa11", "bb22", "cc33", "dd44", "ee55", "ff66"):
            y = tone(300 if word == "yes" else 900, 0.5, 16000)
            soundfile.write(root / word / f"{speaker}_nohash_0.wav", y, 16000)
    (root / "up").mkdir()  # an empty label folder
    soundfile.write(root / "stray.wav", tone(300, 0.5, 16000), 16000)  # no label folder
    noise = root / "_background_noise_"
    noise.mkdir()
    soundfile.write(noise / "hum.wav", tone(50, 2.0, 16000), 16000)
    (noise / "empty.wav").write_bytes(b"")
    soundfile.write(noise / "zeros.wav", np.zeros(16000, np.float32), 16000)
    (root / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\nno/bb22_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/aa11_nohash_0.wav\nno/aa11_nohash_0.wav\n")
    # _silence_ clips are cut from the noise: bad noise files are listed and left out, not a
    # bare error that names no file
    pipeline, config = _speech_config(
        f"speech_commands:{root}",
        tmp_path / "cache",
        "data.silence_percent=50",
        "data.max_rejected_percent=10",  # the stray file is 1 of 13
    )
    run_pipeline(pipeline, config, tmp_path / "run", until="ingest")
    ingest = tmp_path / "run" / "stages" / "ingest"
    rejected = json.loads((ingest / "rejected.json").read_text())
    assert {"item": str(root / "up"), "reason": "empty label folder (no clips)"} in rejected
    reason = "not in a label folder (expected WORD/NAME.wav)"
    assert {"item": str(root / "stray.wav"), "reason": reason} in rejected
    assert {
        "item": str(noise / "empty.wav"),
        "reason": "background noise: empty file (0 bytes)",
    } in rejected
    assert {
        "item": str(noise / "zeros.wav"),
        "reason": "background noise: audio is all zeros",
    } in rejected
    assert json.loads((ingest / "noise.json").read_text()) == [str(noise / "hum.wav")]
    # asking for a command that has no clips is an error, not a silently missing class
    pipeline, config = _speech_config(
        f"speech_commands:{root}",
        tmp_path / "cache",
        "data.commands=[yes, no, up]",
        "data.max_rejected_percent=10",
    )
    with pytest.raises(ValueError, match=r"data.commands \['up'\]: no training clips"):
        run_pipeline(pipeline, config, tmp_path / "run2", until="ingest")


def test_manifest_rows_missing_file_other_label_bom_and_extra_columns(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    _good_clips(folder, takes=3)
    rows = ["path,label,speaker,split"]
    for path in sorted(folder.glob("*.wav")):
        label, speaker, _ = path.stem.split("_")
        split = {"s4": "test", "s3": "validation"}.get(speaker, "train")
        rows.append(f"clips/{path.name},{label},{speaker},{split}")
    rows += [
        "clips/gone.wav,low,s1,train",  # missing file
        "clips/low_s1_0.wav,zebra,s9,test",  # a label with no training clips
        "clips/low_s1_1.wav,low,s1,train,surplus",  # a row with more cells than the header
    ]
    manifest = tmp_path / "list.csv"
    manifest.write_text("\ufeff" + "\r\n".join(rows) + "\r\n", encoding="utf-8")  # BOM, CRLF
    pipeline, config = _speech_config(
        f"manifest:{manifest}", tmp_path / "cache", "data.max_rejected_percent=20"
    )
    report = run_pipeline(pipeline, config, tmp_path / "run", until="ingest")
    rejected = json.loads((tmp_path / "run" / "stages" / "ingest" / "rejected.json").read_text())
    reasons = [r["reason"] for r in rejected]
    assert any(r.startswith("file not found") for r in reasons)
    assert "label 'zebra' has no training clips" in reasons
    assert any("5 columns; the header has 4" in r for r in reasons)
    assert report.metrics["labels"] == ["high", "low"]
    assert report.metrics["examples"] == {"train": 12, "validation": 6, "test": 6}
    # bad rows are clips that cannot be used: too many stop the run, as bad files do
    rows += [f"clips/low_s1_{i % 3}.wav,low,s1,val" for i in range(6)]  # not a split name
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    pipeline, config = _speech_config(f"manifest:{manifest}", tmp_path / "cache")
    with pytest.raises(ValueError, match=r"8 of 33 audio files \(24.2%\) are unusable.*val"):
        run_pipeline(pipeline, config, tmp_path / "run2", until="ingest")


def test_tsv_odd_lines(tmp_path):
    from data.text import TextConfig
    from data.text_sources import TextDataConfig, list_pairs, prepare_pairs

    raw = (
        b"\xef\xbb\xbfGo.\tVe.\tCC-BY 2.0\r\n"  # BOM, Windows line ending, attribution
        b"Hi.\tHola.\r\n"
        b"one column only\n"
        b"a\tb\tc\td\n"  # four columns
        b"Bad \xff byte\tMalo\n"
        b"\tempty source\n"
        b" \t \n"  # whitespace around a tab: an empty pair, rejected, not skipped as blank
        b"\n"  # a blank line is not data
        b"Run!\t\xc2\xa1Corre!\rStop!\t\xc2\xa1Para!\n"  # a bare CR between two lines
        + b"long " * 500
        + b"\tlargo\n"
    )
    path = tmp_path / "pairs.tsv"
    path.write_bytes(raw)
    data = TextDataConfig(source=f"tsv:{path}")
    listing = list_pairs(data, 0)
    assert [p[:2] for p in listing.pairs][:2] == [("Go.", "Ve."), ("Hi.", "Hola.")]
    assert ("Run!", "¡Corre!") in [p[:2] for p in listing.pairs]
    assert ("Stop!", "¡Para!") in [p[:2] for p in listing.pairs]
    kinds = sorted(r["kind"] for r in listing.rejected)
    assert kinds == ["malformed line", "malformed line", "not UTF-8"]
    text = TextConfig()
    kept, rejected = prepare_pairs(
        listing, data, text, lambda s, side: [len(x.split()) for x in s], 0
    )
    assert {r["kind"] for r in rejected} >= {"empty source", "source too long"}
    assert [r["item"] for r in rejected if r["kind"] == "empty source"] == [
        "pairs.tsv:6",
        "pairs.tsv:7",
    ]
    assert {p["source"] for p in kept} == {"Go.", "Hi.", "Run!", "Stop!"}


def test_too_many_bad_tsv_lines_stop_before_training(tmp_path):
    path = tmp_path / "pairs.tsv"
    good = [f"sentence {i}\tfrase {i}" for i in range(40)]
    path.write_text("\n".join([*good, "no tab here", "a\tb\tc\td\te", "\tempty"]) + "\n")
    pipeline, config = resolve_config(
        "translation",
        overrides=[f"data.source=tsv:{path}", "data.val_percent=20", "data.test_percent=20"],
    )
    with pytest.raises(ValueError, match=r"3 of 43 lines \(7.0%\) are unusable.*pairs.tsv:41"):
        run_pipeline(pipeline, config, tmp_path / "run")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=ten", "Bad value for train.epochs: expected int. Received: 'ten'"),
        ("train.epochs=0", "Bad value for train.epochs: expected >= 1. Received: 0"),
        ("data.max_rejected_percent=150", "data.max_rejected_percent: expected a percentage"),
        ("optimizer.clipnorm=-1", "optimizer.clipnorm: expected > 0"),
        ("features.sample_rate=[16000]", "features.sample_rate: expected int"),
        ("model.cell=transformer", "model.cell"),
        ("detect.hop_ms=1500", "hop_ms: expected at most the model's window .1000 ms."),
        ("features.stride_ms=40", "features.stride_ms: expected with features.streaming, a hop"),
    ],
)
def test_bad_config_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        resolve_config("speech_commands", overrides=[override])
