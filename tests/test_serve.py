"""``run.py serve``: every route through Flask's test client, one test per bad request, and the
command itself over real HTTP, answering as ``run.py predict`` does."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile

from models.detection import DetectorConfig
from pipelines.detect import detect_file
from pipelines.serving.app import create_app
from pipelines.serving.live import Sessions
from pipelines.serving.served import find_exports, load
from pipelines.serving.tensors import RequestError
from tests.conftest import ROOT
from tests.serve_fixtures import clips, recording, session_base, tiny_runs
from tests.test_cli import run_cli

SENTENCE = "the 3rd of March, 2021"
LABELS = ["_silence_", "_unknown_", "no", "up", "yes"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_runs(session_base(tmp_path_factory))


@pytest.fixture(scope="module")
def models(runs) -> dict:
    speech, text = runs
    specs = [f"speech={speech}", f"text={text / 'export'}", f"lite={speech / 'export' / 'tflite'}"]
    return {export.name: load(export) for export in find_exports(specs)}


@pytest.fixture(scope="module")
def client(models):
    return create_app(models).test_client()


def _wav(samples: np.ndarray, rate: int = 16000, fmt: str = "WAV") -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format=fmt)
    return out.getvalue()


def _clip(run_dir: Path) -> tuple[str, np.ndarray]:
    path = clips(run_dir, "test")[0]["path"]
    return path, soundfile.read(path, dtype="float32")[0]


# ---------------------------------------------------------------- names and paths


def _fake_export(folder: Path, task: str = "speech_commands", tflite: bool = False) -> Path:
    meta = folder / ("metadata.json" if tflite else "assets.extra/metadata.json")
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"task": task}))
    return folder


def test_exports_are_named_after_their_runs(tmp_path):
    runs = tmp_path / "runs"
    speech = _fake_export(runs / "speech_commands-20260101-120000" / "export")
    text = _fake_export(runs / "translation-20260101-120500" / "export", "translation")
    lite = _fake_export(speech / "tflite", tflite=True)
    loose = _fake_export(tmp_path / "models" / "yesno")
    found = find_exports([str(speech.parent), str(text), str(loose), f"mine={lite}"])
    assert [(e.name, e.path, e.run_dir) for e in found] == [
        ("speech_commands", speech, speech.parent),
        ("translation", text, text.parent),
        ("yesno", loose, None),
        ("mine", lite, speech.parent),
    ]
    assert find_exports([str(lite)])[0].name == "speech_commands-tflite"
    both = tmp_path / "default"  # python run.py --run-dir default
    _fake_export(both / "speech_commands" / "export")
    _fake_export(both / "translation" / "export", "translation")
    assert [e.name for e in find_exports([str(both)])] == ["speech_commands", "translation"]
    again = _fake_export(runs / "speech_commands-20260102-080000" / "export")
    assert [e.name for e in find_exports([str(speech), str(again)])] == [
        "speech_commands-20260101-120000",
        "speech_commands-20260102-080000",
    ]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["missing"], "does not exist"),
        (["empty"], "holds no export"),
        (["a/export", "a=b/export"], "Two exports are named 'a'"),
        (["bad name/export"], "not usable in a URL"),
        (["both=default"], "NAME= names one export"),
    ],
)
def test_bad_export_arguments_say_what_was_expected(tmp_path, specs, message):
    from models.serving import ExportError

    (tmp_path / "empty").mkdir()
    for name in ("a", "b", "bad name", "default/x", "default/y"):
        _fake_export(tmp_path / name / "export")
    with pytest.raises(ExportError, match=message):
        find_exports(
            [str(tmp_path / spec) if "=" not in spec else _prefix(spec, tmp_path) for spec in specs]
        )


def _prefix(spec: str, root: Path) -> str:
    name, _, path = spec.partition("=")
    return f"{name}={root / path}"


# ---------------------------------------------------------------- status, metadata, predict


def test_status_and_metadata_in_tf_serving_shape(client):
    status = client.get("/v1/models/speech").json
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert client.get("/v1/models/speech/versions/1").json == status
    meta = client.get("/v1/models/speech/metadata").json
    assert meta["model_spec"]["name"] == "speech"
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "serving_lengths", "stream_step"} <= set(defs)
    waveform = defs["serving_default"]["inputs"]["waveform"]
    assert waveform["dtype"] == "DT_FLOAT" and len(waveform["tensor_shape"]["dim"]) == 2
    assert meta["metadata"]["export"]["labels"] == LABELS
    assert meta["metadata"]["export"]["sample_rate"] == 16000
    text = client.get("/v1/models/text/metadata").json["metadata"]["signature_def"]
    assert set(text["signature_def"]) == {"serving_default", "attention"}
    assert text["signature_def"]["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"
    lite = client.get("/v1/models/lite/metadata").json["metadata"]["signature_def"]
    assert set(lite["signature_def"]) == {"serving_default", "serving_lengths"}


def test_predict_rows_columns_and_mixed_lengths(client, runs):
    _, y = _clip(runs[0])
    rows = client.post("/v1/models/speech:predict", json={"instances": [y.tolist()]}).json
    columns = client.post("/v1/models/speech:predict", json={"inputs": [y.tolist()]}).json
    named = client.post("/v1/models/speech:predict", json={"inputs": {"waveform": [y.tolist()]}})
    (row,) = rows["predictions"]
    assert set(row) == {"label", "probabilities"} and row["label"] in LABELS
    assert columns["outputs"] == named.json["outputs"]
    assert columns["outputs"]["label"] == [row["label"]]
    np.testing.assert_allclose(columns["outputs"]["probabilities"][0], row["probabilities"])
    mixed = client.post(
        "/v1/models/speech:predict", json={"instances": [y.tolist(), y[:5000].tolist()]}
    )
    short = client.post("/v1/models/speech:predict", json={"instances": [y[:5000].tolist()]})
    for got, alone in zip(
        mixed.json["predictions"], [row, short.json["predictions"][0]], strict=True
    ):
        np.testing.assert_allclose(got["probabilities"], alone["probabilities"], atol=1e-4)
    lite = client.post("/v1/models/lite:predict", json={"instances": [y.tolist()]}).json
    np.testing.assert_allclose(
        lite["predictions"][0]["probabilities"], row["probabilities"], atol=1e-4
    )


def test_concurrent_requests_get_the_answers_they_get_alone(client, runs):
    """The threaded server calls models from several threads (a TFLite interpreter is locked)."""
    from concurrent.futures import ThreadPoolExecutor

    _, y = _clip(runs[0])
    bodies = [{"instances": [y[: 4000 + 2000 * i].tolist()]} for i in range(6)]

    def ask(target_body):
        target, body = target_body
        return client.post(f"/v1/models/{target}:predict", json=body).json["predictions"][0]

    jobs = [(target, body) for target in ("speech", "lite") for body in bodies]
    alone = [ask(job) for job in jobs]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, jobs * 2))
    for got, want in zip(together, alone * 2, strict=True):
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)


def test_predict_text_and_the_attention_signature(client):
    out = client.post("/v1/models/text:predict", json={"instances": [SENTENCE, "", "1/2/33"]}).json
    assert len(out["predictions"]) == 3 and out["predictions"][1] == ""
    assert all(isinstance(p, str) for p in out["predictions"])
    columnar = client.post("/v1/models/text:predict", json={"inputs": [SENTENCE]}).json
    assert columnar == {"outputs": [out["predictions"][0]]}
    body = {"signature_name": "attention", "instances": [SENTENCE]}
    (greedy,) = client.post("/v1/models/text:predict", json=body).json["predictions"]
    source = [t for t in greedy["source_tokens"] if t]
    target = [t for t in greedy["target_tokens"] if t]
    assert source == ["the", "3rd", "of", "March", "\u2581,", "2021"]
    assert target[-1] == "[END]" or len(target) == 12  # decode.max_length of the tiny run
    weights = np.asarray(greedy["weights"])
    assert weights.shape == (len(greedy["target_tokens"]), len(greedy["source_tokens"]))
    np.testing.assert_allclose(weights[: len(target), : len(source)].sum(axis=1), 1.0, atol=1e-4)


# ---------------------------------------------------------------- audio files, detect, listen


def test_classify_audio_gives_run_py_predicts_answer(client, runs, tmp_path, capsys):
    from pipelines.predict import predict

    path, y = _clip(runs[0])
    flac = tmp_path / "clip 8k.flac"  # another format, rate and channel count: converted
    import librosa

    y8 = librosa.resample(y, orig_sr=16000, target_sr=8000)
    soundfile.write(flac, np.stack([y8, y8], axis=1), 8000, format="FLAC")
    long = tmp_path / "long.wav"  # longer than the window: searched, answered with a time
    soundfile.write(long, recording(runs[0], count=2), 16000)
    predict(str(runs[0] / "export"), [str(flac), str(long)])
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for file, want in zip((flac, long), expected, strict=True):
        with open(file, "rb") as handle:
            answer = client.post(
                "/v1/models/speech:classify_audio", data={"file": (handle, file.name)}
            ).json
        assert answer == {"file": file.name, **{k: v for k, v in want.items() if k != "input"}}
    raw = client.post(
        "/v1/models/speech:classify_audio?top_k=5&filename=x.flac", data=flac.read_bytes()
    ).json
    assert raw["label"] == expected[0]["label"] and len(raw["top_k"]) == 5
    curl = client.post(  # curl --data-binary @file says it sends a form
        "/v1/models/speech:classify_audio",
        data=flac.read_bytes(),
        content_type="application/x-www-form-urlencoded",
    ).json
    assert curl["label"] == expected[0]["label"]
    assert "start" in expected[1]


def test_detect_gives_run_py_detects_events(client, models, runs, tmp_path):
    path = tmp_path / "recording.wav"
    soundfile.write(path, recording(runs[0]), 16000)
    config = models["speech"].model.detector.with_overrides(threshold=0.5)
    expected = [
        {k: v for k, v in e.items() if k != "file"}
        for e in detect_file(models["speech"].model, str(path), config)
    ]
    answer = client.post(
        "/v1/models/speech:detect?threshold=0.5", data={"file": (open(path, "rb"), "r.wav")}
    ).json
    assert answer["events"] == expected and answer["seconds"] == pytest.approx(
        soundfile.info(path).duration, abs=1e-3
    )
    assert expected, "the tiny model should find something in its own test clips"
    streamed = client.post(
        "/v1/models/speech:detect?threshold=0.5&stream=true",
        data={"file": (open(path, "rb"), "r.wav")},
    ).json
    for event in streamed["events"]:
        assert set(event) == {"label", "start", "end", "score"} and event["label"] in LABELS[2:]


def test_listen_in_pieces_finds_what_detect_finds(client, models, runs, tmp_path):
    audio = recording(runs[0])
    path = tmp_path / "recording.wav"
    soundfile.write(path, audio, 16000)
    import librosa
    import soxr

    expected = detect_file(
        models["speech"].model,
        str(path),
        models["speech"].model.detector.with_overrides(threshold=0.5),
    )
    # At 48 kHz the session resamples the stream piece by piece; the file detect reads is the
    # same stream resampled the same way (a weak model can flip a borderline event on the tiny
    # differences from resampling the file whole), and that stream is checked against the audio.
    high = librosa.resample(audio, orig_sr=16000, target_sr=48000)
    stream = soxr.ResampleStream(48000, 16000, 1, dtype="float32", quality="HQ")
    sent = [  # each piece as the session receives it: through a 16-bit WAV
        soundfile.read(io.BytesIO(_wav(high[i : i + 24000], 48000)), dtype="float32")[0]
        for i in range(0, high.size, 24000)
    ]
    back = np.concatenate(
        [stream.resample_chunk(piece) for piece in sent]
        + [stream.resample_chunk(np.zeros(0, np.float32), last=True)]
    )
    n = min(back.size, audio.size)
    noise = np.sum((back[:n] - audio[:n]) ** 2)
    assert 10 * np.log10(np.sum(audio[:n] ** 2) / max(noise, 1e-12)) > 30  # dB
    soundfile.write(tmp_path / "back.wav", back, 16000, subtype="FLOAT")
    want = {
        "at-16k": expected,
        "at-48k": detect_file(
            models["speech"].model,
            str(tmp_path / "back.wav"),
            models["speech"].model.detector.with_overrides(threshold=0.5),
        ),
    }
    for session, rate in (("at-16k", 16000), ("at-48k", 48000)):  # 48 kHz: resampled as a stream
        samples = high if rate != 16000 else audio
        events, piece = [], rate // 2
        for start in range(0, samples.size, piece):
            answer = client.post(
                f"/v1/models/speech:listen?session={session}&threshold=0.5",
                data=_wav(samples[start : start + piece], rate),
            ).json
            events += answer["events"]
            if start == 0:  # half a window: nothing to classify yet
                assert answer["latest"] is None and answer["seconds"] <= 0.5
        assert answer["latest"]["label"] in LABELS  # the newest window's answer
        events += client.post(f"/v1/models/speech:listen?session={session}&end=true").json["events"]
        assert [e["label"] for e in events] == [e["label"] for e in want[session]], session
        for got, ref in zip(events, want[session], strict=True):
            tolerance = 1e-3 if rate == 16000 else 0.11  # one hop
            assert got["start"] == pytest.approx(ref["start"], abs=tolerance)
            assert got["end"] == pytest.approx(ref["end"], abs=tolerance)
    first = client.post("/v1/models/speech:listen?session=mixed", data=_wav(audio[:8000], 16000))
    assert first.status_code == 200
    changed = client.post("/v1/models/speech:listen?session=mixed", data=_wav(audio[:4000], 8000))
    assert changed.status_code == 400 and "16000 Hz" in changed.json["error"]
    # a piece's detector settings would be ignored: refused unless the session's own
    own = client.post(
        f"/v1/models/speech:listen?session=mixed&threshold={models['speech'].model.detector.threshold}",
        data=_wav(audio[:4000], 16000),
    )
    assert own.status_code == 200
    moved = client.post(
        "/v1/models/speech:listen?session=mixed&threshold=0.95", data=_wav(audio[:4000], 16000)
    )
    assert moved.status_code == 400
    assert "expected the same threshold" in moved.json["error"]
    assert "got threshold=0.95" in moved.json["error"]
    # a setting left out keeps the session's: only the ones given are compared
    both = client.post(
        "/v1/models/speech:listen?session=two&threshold=0.8&average_ms=300",
        data=_wav(audio[:4000], 16000),
    )
    assert both.status_code == 200
    one = client.post(
        "/v1/models/speech:listen?session=two&threshold=0.8", data=_wav(audio[:4000], 16000)
    )
    assert one.status_code == 200, one.json
    again = client.post(
        "/v1/models/speech:listen?session=two&threshold=0.8&average_ms=400",
        data=_wav(audio[:4000], 16000),
    )
    assert again.status_code == 400
    assert "expected the same average_ms" in again.json["error"]
    assert "threshold" not in again.json["error"].split("expected the same")[1].split(" for")[0]


@pytest.mark.parametrize("name", ["speech", "lite"])
def test_listen_with_stream_finds_what_detect_stream_finds(client, models, runs, tmp_path, name):
    """stream=true: the streaming model's staggered runs, fed as pieces arrive."""
    audio = recording(runs[0])
    path = tmp_path / "recording.wav"
    soundfile.write(path, audio, 16000, subtype="FLOAT")
    model = models[name].model
    config = model.detector.with_overrides(threshold=0.5)
    want = detect_file(model, str(path), config, stream=True)
    assert want, "the recording's words are found"
    events, session = [], f"stream-{name}"
    for start in range(0, audio.size, 7000):  # pieces unrelated to the hop and the runs
        answer = client.post(
            f"/v1/models/{name}:listen?session={session}&threshold=0.5&stream=true",
            data=_wav(audio[start : start + 7000], 16000, "FLAC"),
        ).json
        assert answer["stream"] is True
        events += answer["events"]
    assert answer["latest"]["label"] in LABELS
    last = client.post(f"/v1/models/{name}:listen?session={session}&end=true&stream=true")
    events += last.json["events"]
    assert [e["label"] for e in events] == [e["label"] for e in want]
    for got, ref in zip(events, want, strict=True):
        assert got["start"] == pytest.approx(ref["start"], abs=1e-3)
        assert got["end"] == pytest.approx(ref["end"], abs=1e-3)
        assert got["score"] == pytest.approx(ref["score"], abs=1e-3)
    too_long = client.post(  # a whole window: each of 3 runs ends (3 x 5,280 samples) before it
        f"/v1/models/{name}:listen?session=long&stream=true&hop_ms=1000&stream_overlap=3",
        data=_wav(audio[:8000], 16000),
    )
    assert too_long.status_code == 400 and "hop_ms (with stream)" in too_long.json["error"]
    beyond = client.post(  # longer than the window: refused whatever the mode
        f"/v1/models/{name}:listen?session=beyond&hop_ms=2000", data=_wav(audio[:8000], 16000)
    )
    assert beyond.status_code == 400 and "window (1000 ms)" in beyond.json["error"]
    client.post(f"/v1/models/{name}:listen?session=flip", data=_wav(audio[:8000], 16000))
    flip = client.post(
        f"/v1/models/{name}:listen?session=flip&stream=true", data=_wav(audio[:8000], 16000)
    )
    assert flip.status_code == 400
    assert (
        "started with stream=false" in flip.json["error"]
        and "got stream=true" in (flip.json["error"])
    )


def test_listening_sessions_are_capped_and_forgotten_when_idle():
    import time
    from types import SimpleNamespace

    sessions = Sessions(limit=2, idle_seconds=60)
    opened = {key: SimpleNamespace(last_used=time.monotonic()) for key in "abcd"}
    for key in "ab":
        assert sessions.get(key, lambda key=key: opened[key]) is opened[key]
    assert sessions.get("a", lambda: None) is opened["a"]  # open: not made again
    with pytest.raises(RequestError, match="2 listening sessions are open") as full:
        sessions.get("c", lambda: opened["c"])
    assert full.value.status == 429
    sessions.close("a")
    assert sessions.get("c", lambda: opened["c"]) is opened["c"]
    opened["b"].last_used -= 61  # idle for longer than idle_seconds: forgotten
    assert sessions.get("d", lambda: opened["d"]) is opened["d"] and len(sessions) == 2


# ---------------------------------------------------------------- the page and the cards


def test_page_assets_and_model_cards(client, runs):
    page = client.get("/")
    assert page.status_code == 200 and b"/static/app.js" in page.data
    for asset in ("app.js", "style.css", "recorder.js"):
        assert client.get(f"/static/{asset}").status_code == 200
    info = client.get("/api/models").json
    assert info["max_body_mb"] == 50.0
    cards = {m["name"]: m for m in info["models"]}
    speech, text = cards["speech"], cards["text"]
    assert speech["labels"] == LABELS and speech["sample_rate"] == 16000
    assert speech["stream"] is True and cards["lite"]["format"] == "tflite"
    # the export's own detector settings (the default preset's, with the fixture's own stream
    # threshold), which the page starts from
    expected = DetectorConfig(stream_overlap=2, stream_threshold=0.55)
    assert speech["detector"] == dataclasses.asdict(expected)
    rows = dict(speech["summary"])
    assert rows["source"] == "synthetic" and rows["test accuracy"].endswith("on 8 clips")
    assert text["attention"] is True and len(text["examples"]) == 4
    assert "test BLEU / chrF" in dict(text["summary"])
    assert set(speech["plots"]) == {
        f"/api/models/speech/plots/{name}"
        for name in ("confusion_matrix.png", "gradients.png", "training.png")
    }
    image = client.get(speech["plots"][0])
    assert image.status_code == 200 and image.data.startswith(b"\x89PNG")
    missing = client.get("/api/models/speech/plots/..%2Fmetrics.json")
    assert missing.status_code == 404


def test_plots_of_a_run_given_by_a_relative_path(runs, monkeypatch):
    monkeypatch.chdir(runs[0].parent)
    (relative,) = find_exports([runs[0].name])
    assert not relative.run_dir.is_absolute()
    client = create_app({"speech": load(relative)}).test_client()
    image = client.get("/api/models/speech/plots/training.png")
    assert image.status_code == 200 and image.data.startswith(b"\x89PNG")


# ---------------------------------------------------------------- bad requests: one test each

BAD_REQUESTS = {
    "malformed JSON": (
        "POST",
        "speech:predict",
        {"data": b'{"instances": [0.1,'},
        400,
        "malformed JSON: ",
    ),
    "JSON nested too deeply": (
        "POST",
        "speech:predict",
        {"data": b"[" * 100_000},
        400,
        "nested too deeply",
    ),
    "JSON that is not an object": (
        "POST",
        "speech:predict",
        {"json": [1, 2]},
        400,
        "expected a JSON object",
    ),
    "both formats": (
        "POST",
        "speech:predict",
        {"json": {"instances": [[0.1]], "inputs": [[0.1]]}},
        400,
        "exactly one of 'instances'",
    ),
    "no instances": ("POST", "speech:predict", {"json": {"instances": []}}, 400, "non-empty list"),
    "wrong shape": (
        "POST",
        "speech:predict",
        {"json": {"instances": [0.1, 0.2]}},
        400,
        "expected float32 [?, ?] (2 dimensions",
    ),
    "wrong dtype for audio": (
        "POST",
        "speech:predict",
        {"json": {"instances": [["a", "b"]]}},
        400,
        "numbers; got strings",
    ),
    "wrong dtype for text": (
        "POST",
        "text:predict",
        {"json": {"instances": [1, 2]}},
        400,
        "strings; got numbers",
    ),
    "ragged text": (
        "POST",
        "text:predict",
        {"json": {"inputs": [["a"], ["b", "c"]]}},
        400,
        "rows of different lengths",
    ),
    "fractional lengths": (
        "POST",
        "speech:predict",
        {
            "json": {
                "signature_name": "serving_lengths",
                "instances": [{"waveform": [0.1, 0.2], "lengths": 1.5}],
            }
        },
        400,
        "integers; got fractions",
    ),
    "lengths beyond int32": (
        "POST",
        "speech:predict",
        {
            "json": {
                "signature_name": "serving_lengths",
                "instances": [{"waveform": [0.1, 0.2], "lengths": 4294967301}],
            }
        },
        400,
        "values in [-2.14748e+09, 2.14748e+09]; got 4.29497e+09",
    ),
    "samples beyond float32": (
        "POST",
        "speech:predict",
        {"data": b'{"instances": [[0.1, 1e39]]}'},
        400,
        "got 0.1 to 1e+39",
    ),
    "booleans for samples": (
        "POST",
        "speech:predict",
        {"json": {"instances": [[True, False]]}},
        400,
        "numbers; got booleans",
    ),
    "booleans among samples": (
        "POST",
        "speech:predict",
        {"json": {"instances": [[0.5, True]]}},  # numpy would read it as [0.5, 1.0]
        400,
        "numbers; got booleans among the numbers",
    ),
    "numbers among strings": (
        "POST",
        "text:predict",
        {"json": {"instances": ["hola", 1]}},
        400,
        "strings; got numbers among the strings",
    ),
    "missing input": (
        "POST",
        "speech:predict",
        {"json": {"signature_name": "serving_lengths", "instances": [{"waveform": [0.1]}]}},
        400,
        "missing inputs ['lengths']",
    ),
    "NaN samples": (
        "POST",
        "speech:predict",
        {"data": b'{"instances": [[0.1, NaN]]}'},
        400,
        "NaN or Inf",
    ),
    "no samples": ("POST", "speech:predict", {"json": {"instances": [[]]}}, 400, "0 samples"),
    "NaN samples, TFLite": (
        "POST",
        "lite:predict",
        {"data": b'{"instances": [[0.1, NaN]]}'},
        400,
        "all finite",
    ),
    "unknown signature": (
        "POST",
        "speech:predict",
        {"json": {"signature_name": "nope", "instances": [[0.1]]}},
        400,
        "expected one of ['serving_default'",
    ),
    "unknown model": (
        "POST",
        "nope:predict",
        {"json": {"instances": [[0.1]]}},
        404,
        "unknown model 'nope': expected one of ['lite', 'speech', 'text']",
    ),
    "unknown version": ("GET", "speech/versions/2", {}, 404, "serves version 1"),
    "unknown method": ("POST", "speech:explain", {"data": b"{}"}, 404, "Unknown method 'explain'"),
    "wrong HTTP method": ("PUT", "speech", {}, 405, "PUT is not allowed"),
    "not audio": (
        "POST",
        "speech:classify_audio",
        {"data": {"file": (io.BytesIO(b"RIFF, but not really"), "x.wav")}},
        400,
        "not usable audio: unreadable audio",
    ),
    "no file": ("POST", "speech:classify_audio", {"data": b""}, 400, "no audio: expected a file"),
    "audio to a translator": (
        "POST",
        "text:classify_audio",
        {"data": b"RIFF"},
        400,
        "expects a speech model",
    ),
    "bad top_k": (
        "POST",
        "speech:classify_audio?top_k=9",
        {"data": b"RIFF"},
        400,
        "top_k: expected an integer in [1, 5]",
    ),
    "bad detector setting": (
        "POST",
        "speech:detect?threshold=2",
        {"data": b"RIFF"},
        400,
        "threshold: expected in (0, 1]",
    ),
    "not a number": (
        "POST",
        "speech:detect?hop_ms=fast",
        {"data": b"RIFF"},
        400,
        "hop_ms: expected a number",
    ),
    "not audio to detect": (
        "POST",
        "speech:detect",
        {"data": b"text, not audio"},
        400,
        "not usable audio",
    ),
    "bad session id": (
        "POST",
        "speech:listen?session=../x",
        {"data": b"RIFF"},
        400,
        "session: expected 1-64 letters",
    ),
    "listen without audio": (
        "POST",
        "speech:listen?session=s1",
        {},
        400,
        "no audio: expected a piece",
    ),
    "listen to text": (
        "POST",
        "speech:listen?session=s2",
        {"data": b"hello"},
        400,
        "not usable audio",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_a_json_error_saying_what_was_expected(client, case):
    method, target, body, status, message = BAD_REQUESTS[case]
    response = client.open(f"/v1/models/{target}", method=method, **body)
    assert response.status_code == status, response.json
    assert response.is_json and message in response.json["error"], response.json


def test_oversized_body_gets_413_naming_the_limit(models):
    small = create_app(models, max_body_mb=0.01).test_client()
    for body in ({"data": b"x" * 20_000}, {"data": {"file": (io.BytesIO(b"x" * 20_000), "a.wav")}}):
        response = small.post("/v1/models/speech:classify_audio", **body)
        assert response.status_code == 413
        assert "expected at most 0.01 MiB (the server's --max-body-mb)" in response.json["error"]
    assert small.post("/v1/models/text:predict", json={"instances": ["a"]}).status_code == 200


def test_a_port_in_use_is_an_error_naming_it(runs):
    import socket

    from pipelines.serving.app import ServeError, serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve([str(runs[1])], port=port)
    with pytest.raises(ServeError, match="--max-body-mb: expected a positive number"):
        serve([str(runs[1])], max_body_mb=0)


def test_unknown_path_lists_the_endpoints(client):
    response = client.get("/v2/models")
    assert response.status_code == 404 and "/v1/models/NAME" in response.json["error"]


# ---------------------------------------------------------------- the command, over HTTP


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_serve_command_answers_a_tf_serving_client_as_run_py_predict_does(runs):
    speech, text = runs
    clip, y = _clip(speech)
    server = subprocess.Popen(
        [sys.executable, "run.py", "serve", str(speech), str(text), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    timer = threading.Timer(300, server.kill)  # never hang the suite
    timer.start()
    try:
        said = [json.loads(run_cli("predict", str(speech / "export"), clip).stdout)]
        said.append(json.loads(run_cli("predict", str(text / "export"), SENTENCE).stdout))
        lines = []
        while not lines or not lines[-1].startswith("page: "):
            line = server.stdout.readline()
            assert line, f"the server stopped:\n{server.stderr.read()}"
            lines.append(line.strip())
        assert [line.split(" ")[1] for line in lines[:-1]] == ["speech_commands", "translation"]
        base = lines[-1].split(" ")[1].rstrip("/")
        assert base.startswith("http://127.0.0.1:")
        body = json.dumps({"instances": [y.tolist()]}).encode()  # curl -d '{"instances": ...}'
        status, answer = _post(f"{base}/v1/models/speech_commands:predict", body)
        assert status == 200
        (prediction,) = answer["predictions"]
        assert prediction["label"] == said[0]["label"]
        for top in said[0]["top_k"]:
            assert prediction["probabilities"][LABELS.index(top["label"])] == pytest.approx(
                top["probability"], abs=1e-3
            )
        assert _post(f"{base}/v1/models/speech_commands:predict", b"{oops")[0] == 400
        status, answer = _post(
            f"{base}/v1/models/translation:predict", json.dumps({"instances": [SENTENCE]}).encode()
        )
        assert status == 200 and answer == {"predictions": [said[1]["translation"]]}  # still up
    finally:
        timer.cancel()
        server.terminate()
        _, log = server.communicate(timeout=30)
    requests = [line for line in log.splitlines() if " POST /v1/models/" in line]
    assert len(requests) == 3 and " 400 " in requests[1]  # one line per request
