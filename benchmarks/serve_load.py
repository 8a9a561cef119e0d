"""Serving under load: N concurrent clients on loopback for a bounded time, for both models.

Starts ``python run.py serve`` on the given runs (a free port of 127.0.0.1) and keeps N client
threads, each with its own keep-alive connection, sending requests for ``--seconds`` per
workload: a TF-Serving-style ``:predict`` of a 1-s spoken command (``{"instances": [waveform]}``,
JSON), ``:classify_audio`` of the same command as a WAV file, and ``:predict`` of a sentence.
Reports requests/s and p50/p99 latency, and counts every answer that is not a 200 (the run
fails if any). The baseline is the same work called directly in this process with the same
number of threads (the signature on arrays, ``run.py predict``'s code on the file): the ratios
show what HTTP, JSON and the server cost. Workloads alternate with their baselines in rounds.
Usage: python benchmarks/serve_load.py SPEECH_RUN TRANSLATION_RUN [--clients 8] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from pipelines.serving.served import find_exports, load  # noqa: E402

Maker = Callable[[], Callable[[], bool]]  # per client: () -> one request -> succeeded


def hammer(make: Maker, clients: int, seconds: float) -> dict:
    """``clients`` threads repeat a request until ``seconds`` have passed; the figures."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failed = [0] * clients
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        request = make()
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                ok = request()
            except Exception:  # noqa: BLE001 - a dropped connection is a failure too
                ok, request = False, make()
            latencies[index].append(time.perf_counter() - start)
            failed[index] += not ok

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    all_ms = np.concatenate([np.asarray(x) for x in latencies]) * 1000
    return {
        "requests": int(all_ms.size),
        "failed": int(sum(failed)),
        "per_second": all_ms.size / elapsed,
        "p50_ms": float(np.percentile(all_ms, 50)),
        "p99_ms": float(np.percentile(all_ms, 99)),
    }


def http_post(port: int, path: str, body: bytes, content_type: str) -> Maker:
    def make() -> Callable[[], bool]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

        def request() -> bool:
            connection.request("POST", path, body, {"Content-Type": content_type})
            response = connection.getresponse()
            response.read()
            return response.status == 200

        return request

    return make


def direct(call: Callable[[], object]) -> Maker:
    def make() -> Callable[[], bool]:
        def request() -> bool:
            call()
            return True

        return request

    return make


def spoken_command(rate: int) -> np.ndarray:
    """'yes' by an eSpeak voice in 1 s of faint noise, at ``rate``."""
    import librosa

    from data.espeak import Espeak

    speaker = Espeak()
    word = librosa.resample(speaker.synthesize("yes"), orig_sr=speaker.sample_rate, target_sr=rate)
    clip = np.random.default_rng(0).normal(0, 0.003, rate).astype(np.float32)
    clip[rate // 4 : rate // 4 + min(word.size, rate * 3 // 4)] += word[: rate * 3 // 4] * 0.5
    return clip


def start_server(specs: list[str]) -> tuple[subprocess.Popen, int]:
    server = subprocess.Popen(
        [sys.executable, "run.py", "serve", *specs, "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # one log line per request: written, not read
        text=True,
    )
    for line in server.stdout:
        if line.startswith("page: "):
            return server, int(line.split()[1].rstrip("/").rsplit(":", 1)[1])
    raise RuntimeError("the server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("speech", help="a speech run directory or export")
    parser.add_argument("translation", help="a translation run directory or export")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="per workload and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    specs = [f"speech={args.speech}", f"text={args.translation}"]
    models = {e.name: load(e) for e in find_exports(specs)}
    speech, text = models["speech"], models["text"]
    clip = spoken_command(speech.model.rate)
    wav = io.BytesIO()
    soundfile.write(wav, clip, speech.model.rate, format="WAV", subtype="PCM_16")
    wav_path = Path(tempfile.mkdtemp()) / "yes.wav"
    wav_path.write_bytes(wav.getvalue())
    samples = text.metrics().get("samples") or [{"source": "the 3rd of March, 2021"}]
    sentence = samples[0]["source"]
    server, port = start_server(specs)
    try:
        workloads = {
            "speech :predict (JSON, 1-s clip)": (
                http_post(
                    port,
                    "/v1/models/speech:predict",
                    json.dumps({"instances": [clip.tolist()]}).encode(),
                    "application/json",
                ),
                direct(lambda: speech.run("serving_default", {"waveform": clip[None]})),
            ),
            "speech :classify_audio (WAV upload)": (
                http_post(port, "/v1/models/speech:classify_audio", wav.getvalue(), "audio/wav"),
                direct(lambda: speech.classify_file(str(wav_path))),
            ),
            "translation :predict (one sentence)": (
                http_post(
                    port,
                    "/v1/models/text:predict",
                    json.dumps({"instances": [sentence]}, ensure_ascii=False).encode(),
                    "application/json",
                ),
                direct(lambda: text.run("serving_default", {"text": np.array([sentence], object)})),
            ),
        }
        for served, baseline in workloads.values():  # warm up both paths
            hammer(served, 1, 0.5)
            hammer(baseline, 1, 0.5)
        totals: dict[str, dict[str, list[dict]]] = {
            n: {"served": [], "direct": []} for n in workloads
        }
        for _ in range(args.rounds):
            for name, (served, baseline) in workloads.items():
                totals[name]["served"].append(hammer(served, args.clients, args.seconds))
                totals[name]["direct"].append(hammer(baseline, args.clients, args.seconds))
    finally:
        server.terminate()
        server.wait(30)
    failed = 0
    print(
        f"{args.clients} concurrent clients, {args.rounds} x {args.seconds:g} s per workload, "
        f"on {os.cpu_count()} CPU cores (server and clients share them)"
    )
    for name, runs in totals.items():
        served, base = (_merge(runs[k]) for k in ("served", "direct"))
        failed += served["failed"]
        print(
            f"{name}: {served['per_second']:.1f} req/s, p50 {served['p50_ms']:.0f} ms, p99 "
            f"{served['p99_ms']:.0f} ms, {served['failed']} failed of {served['requests']}; "
            f"in-process {base['per_second']:.1f} calls/s, p50 {base['p50_ms']:.0f} ms, p99 "
            f"{base['p99_ms']:.0f} ms; served/in-process throughput "
            f"{served['per_second'] / base['per_second']:.2f}x, p50 latency "
            f"{served['p50_ms'] / base['p50_ms']:.2f}x"
        )
    print("nothing failed" if not failed else f"{failed} requests FAILED")
    return 1 if failed else 0


def _merge(rounds: list[dict]) -> dict:
    """Requests and failures summed over rounds; requests/s their mean, percentiles their median."""
    return {
        "requests": sum(r["requests"] for r in rounds),
        "failed": sum(r["failed"] for r in rounds),
        "per_second": float(np.mean([r["per_second"] for r in rounds])),
        "p50_ms": float(np.median([r["p50_ms"] for r in rounds])),
        "p99_ms": float(np.median([r["p99_ms"] for r in rounds])),
    }


if __name__ == "__main__":
    sys.exit(main())
