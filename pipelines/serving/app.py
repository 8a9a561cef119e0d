"""The Flask app: TensorFlow Serving's REST routes, audio uploads, listening and the page.

Routes (``NAME`` is a served model; ``/versions/1`` may follow it, as TF Serving allows):

- ``GET /v1/models/NAME`` (status), ``GET /v1/models/NAME/metadata`` (signature defs and the
  export's ``metadata.json``), ``POST /v1/models/NAME:predict`` (``instances`` or ``inputs``);
- ``POST /v1/models/NAME:classify_audio`` (an audio file: ``run.py predict``'s answer),
  ``POST /v1/models/NAME:detect`` (a recording: ``run.py detect``'s events),
  ``POST /v1/models/NAME:listen?session=ID[&end=true]`` (audio in pieces: events as they happen);
- ``GET /`` (the page), ``GET /api/models`` (what the page shows), ``GET
  /api/models/NAME/plots/FILE`` (the run's plots).

Every error is JSON ``{"error": "..."}`` with a 4xx status that says what was expected (5xx only
for a bug, and the server goes on). One log line per request.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from data.checks import ConfigError
from data.registry import Registry
from models.detection import DetectorConfig
from models.serving import ExportError
from pipelines.serving.live import LiveSession, Sessions
from pipelines.serving.served import Served
from pipelines.serving.speech import AUDIO_EXPECTED, SpeechServed, upload_suffix
from pipelines.serving.tensors import RequestError, parse_json

WEB = Path(__file__).with_name("web")
SESSION = re.compile(r"[A-Za-z0-9_-]{1,64}")
log = logging.getLogger("serve")


class ServeError(RuntimeError):
    """The server cannot start (the address is taken, a setting is out of range)."""


# POST /v1/models/NAME:VERB -> a function (app state, model) -> JSON answer
VERBS: Registry[Callable[[Any, Served], dict]] = Registry("method")


def create_app(models: dict[str, Served], max_body_mb: float = 50.0) -> Flask:
    """The app serving ``models`` by name; request bodies over ``max_body_mb`` MiB get a 413."""
    app = Flask(__name__, static_folder=str(WEB), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = int(max_body_mb * 2**20)
    app.json.sort_keys = False  # label before probabilities, as the signature lists them
    app.json.ensure_ascii = False
    app.extensions["serve"] = state = _State(models, max_body_mb)

    @app.before_request
    def start() -> None:
        g.start = time.perf_counter()
        limit = app.config["MAX_CONTENT_LENGTH"]
        if request.content_length is not None and request.content_length > limit:
            raise RequestEntityTooLarge()

    @app.after_request
    def log_line(response: Response) -> Response:
        ms = (time.perf_counter() - g.get("start", time.perf_counter())) * 1000
        log.info(
            "%s %s %s %d %.1f ms in %d B out %s B",
            request.remote_addr,
            request.method,
            request.full_path.rstrip("?"),
            response.status_code,
            ms,
            request.content_length or 0,
            response.content_length if response.content_length is not None else "-",
        )
        return response

    @app.errorhandler(RequestError)
    def bad_request(err: RequestError) -> tuple[Response, int]:
        return jsonify(error=str(err)), err.status

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> tuple[Response, int]:
        if isinstance(err, RequestEntityTooLarge):
            size = request.content_length
            got = f"{size / 2**20:.1f} MiB" if size is not None else "more"
            message = (
                f"request body too large: {got}; expected at most {state.max_body_mb:g} MiB "
                "(the server's --max-body-mb)"
            )
        elif err.code == 404:
            message = (
                f"no such endpoint: {request.method} {request.path}; expected /, /api/models or "
                f"/v1/models/NAME[/metadata|:predict|:classify_audio|:detect|:listen] with NAME "
                f"one of {sorted(state.models)}"
            )
        elif err.code == 405:
            message = (
                f"{request.method} is not allowed on {request.path}: expected {err.valid_methods}"
            )
        else:
            message = err.description or err.name
        return jsonify(error=message), err.code or 500

    @app.errorhandler(Exception)
    def internal(err: Exception) -> tuple[Response, int]:  # a bug: say so, keep serving
        log.exception("internal error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error: {type(err).__name__}: {err}"), 500

    @app.get("/")
    def page() -> Response:
        return send_from_directory(WEB, "index.html")

    @app.get("/api/models")
    def api_models() -> Response:
        return jsonify(
            models=[m.info() for m in state.models.values()], max_body_mb=state.max_body_mb
        )

    @app.get("/api/models/<name>/plots/<filename>")
    def plot(name: str, filename: str) -> Response:
        served = state.model(name)
        if filename not in served.plots():
            raise RequestError(
                f"model {name!r} has no plot {filename!r}: expected one of {served.plots()}", 404
            )
        # resolved here: Flask reads a relative folder from the package, not the working directory
        return send_from_directory((served.run_dir / "plots").resolve(), filename)

    @app.get("/v1/models/<name>")
    @app.get("/v1/models/<name>/versions/<version>")
    def status(name: str, version: str = "1") -> Response:
        return jsonify(state.model(name, version).status())

    @app.get("/v1/models/<name>/metadata")
    @app.get("/v1/models/<name>/versions/<version>/metadata")
    def metadata(name: str, version: str = "1") -> Response:
        return jsonify(state.model(name, version).metadata())

    @app.post("/v1/models/<target>")
    @app.post("/v1/models/<name>/versions/<target>")
    def call(target: str, name: str | None = None) -> Response:
        head, sep, verb = target.rpartition(":")
        if not sep:
            raise RequestError(
                f"POST {request.path}: expected /v1/models/NAME:VERB with VERB one of "
                f"{VERBS.names()}",
                404,
            )
        served = state.model(name, head) if name is not None else state.model(head)
        try:
            handler = VERBS.get(verb)
        except KeyError as err:
            raise RequestError(str(err.args[0]), 404) from None
        return jsonify(handler(state, served))

    return app


class _State:
    """What the routes share: the models, the body limit, the listening sessions."""

    def __init__(self, models: dict[str, Served], max_body_mb: float) -> None:
        self.models, self.max_body_mb = models, max_body_mb
        self.sessions = Sessions()

    def model(self, name: str, version: str = "1") -> Served:
        if name not in self.models:
            raise RequestError(
                f"unknown model {name!r}: expected one of {sorted(self.models)}", status=404
            )
        if version != "1":
            raise RequestError(
                f"model {name!r} has no version {version!r}: this server serves version 1 of "
                "each export",
                status=404,
            )
        return self.models[name]


def _speech(served: Served, verb: str) -> SpeechServed:
    if not isinstance(served, SpeechServed):
        raise RequestError(
            f"model {served.name!r} is a {served.task} model: :{verb} expects a speech model"
        )
    return served


def _upload() -> tuple[str, bytes]:
    """The uploaded file: multipart field ``file`` (or the only one), else the raw body.

    Only a multipart body is parsed as a form: ``curl --data-binary @a.wav`` says it sends a
    urlencoded form, and parsing it as one would leave no body to read.
    """
    if request.mimetype == "multipart/form-data" and request.files:
        upload = request.files.get("file") or next(iter(request.files.values()))
        data, filename = upload.read(), upload.filename or ""
    else:
        data, filename = request.get_data(), request.args.get("filename", "")
    if not data:
        raise RequestError(
            "no audio: expected a file in the multipart field 'file', or the file as the body"
        )
    return filename, data


def _with_file(data: bytes, filename: str, use: Callable[[str], Any]) -> Any:  # noqa: ANN401
    """Calls ``use(path)`` on a temporary copy of an upload (the command line's code reads paths)."""
    handle, path = tempfile.mkstemp(prefix="serve-", suffix=upload_suffix(filename))
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        return use(path)
    except RequestError as err:  # name the upload, not the temporary copy
        raise RequestError(str(err).replace(path, filename or "the upload"), err.status) from None
    finally:
        os.unlink(path)


def _number(name: str) -> float | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise RequestError(f"query parameter {name}: expected a number; got {raw!r}") from None
    if not math.isfinite(value):
        raise RequestError(f"query parameter {name}: expected a finite number; got {raw!r}")
    return value


def _flag(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0", ""):
        raise RequestError(f"query parameter {name}: expected true or false; got {raw!r}")
    return raw in ("true", "1", "")


DETECTOR_PARAMETERS = ("threshold", "hop_ms", "average_ms", "suppression_ms", "listen_ms")


def _detector_config(defaults: DetectorConfig) -> DetectorConfig:
    """``defaults`` (the export's own) with the settings given as query parameters."""
    values = {k: _number(k) for k in DETECTOR_PARAMETERS}
    overlap = _number("stream_overlap")
    if overlap is not None and overlap != int(overlap):
        raise RequestError(f"query parameter stream_overlap: expected an integer; got {overlap}")
    values["stream_overlap"] = None if overlap is None else int(overlap)
    try:
        return defaults.with_overrides(**values)
    except ConfigError as err:
        raise RequestError(f"query parameters: {err}") from None


def _in_effect(config: DetectorConfig, stream: bool) -> DetectorConfig:
    """The settings a session in that mode runs with (the other mode's set aside)."""
    if stream:
        return config.for_stream()
    return dataclasses.replace(
        config, stream_threshold=None, stream_average_ms=None, stream_overlap=2
    )


@VERBS.register("predict")
def _predict(state: _State, served: Served) -> dict:
    return served.predict(parse_json(request.get_data()))


@VERBS.register("classify_audio")
def _classify_audio(state: _State, served: Served) -> dict:
    speech = _speech(served, "classify_audio")
    top_k = _number("top_k")
    labels = len(speech.model.labels)
    if top_k is not None and (top_k != int(top_k) or not 1 <= top_k <= labels):
        raise RequestError(f"query parameter top_k: expected an integer in [1, {labels}]")
    filename, data = _upload()
    k = None if top_k is None else int(top_k)
    return {"file": filename, **_with_file(data, filename, lambda p: speech.classify_file(p, k))}


@VERBS.register("detect")
def _detect(state: _State, served: Served) -> dict:
    import soundfile

    speech = _speech(served, "detect")
    config, stream = _detector_config(speech.model.detector), _flag("stream")
    filename, data = _upload()

    def run(path: str) -> dict:
        events = speech.detect_file(path, config, stream)
        return {
            "file": filename,
            "seconds": round(soundfile.info(path).duration, 3),
            "events": events,
        }

    return _with_file(data, filename, run)


@VERBS.register("listen")
def _listen(state: _State, served: Served) -> dict:
    speech = _speech(served, "listen")
    key = request.args.get("session", "")
    if not SESSION.fullmatch(key):
        raise RequestError(
            f"query parameter session: expected 1-64 letters, digits, '_' or '-'; got {key!r}"
        )
    end = _flag("end")
    data = request.get_data()
    samples, rate = _decode(data) if data else (None, None)
    if samples is None and not end:
        raise RequestError("no audio: expected a piece of audio (e.g. WAV) as the body")
    config, stream = _detector_config(speech.model.detector), _flag("stream")

    try:
        config.check_window(speech.model.window / speech.model.rate)
    except ConfigError as err:
        raise RequestError(f"query parameters: {err}") from None

    def start() -> LiveSession:
        try:
            return LiveSession(speech.model, config, rate or speech.model.rate, stream)
        except (ExportError, ConfigError) as err:  # cannot stream; a hop too long for the runs
            raise RequestError(f"stream=true: {err}") from None

    session = state.sessions.get(key, start)
    with session.lock:
        given = [k for k in (*DETECTOR_PARAMETERS, "stream_overlap") if k in request.args]
        had, got = _in_effect(session.config, session.stream), _in_effect(config, session.stream)
        # a setting left out keeps the session's; one given must be the session's, else it
        # would be silently ignored
        moved = [k for k in given if getattr(got, k) != getattr(had, k)]
        if moved:
            raise RequestError(
                f"session {key!r} started with other detector settings: expected the same "
                f"{', '.join(moved)} for every piece (or none); the session has "
                + ", ".join(f"{k}={getattr(had, k)}" for k in moved)
                + "; got "
                + ", ".join(f"{k}={getattr(got, k)}" for k in moved)
            )
        if "stream" in request.args and stream != session.stream:
            raise RequestError(
                f"session {key!r} started with stream={str(session.stream).lower()}: expected "
                f"the same for every piece; got stream={str(stream).lower()}"
            )
        if rate is not None and rate != session.rate:
            raise RequestError(
                f"session {key!r} started at {session.rate} Hz: expected every piece at that "
                f"rate; got {rate} Hz"
            )
        events = session.push(samples) if samples is not None else []
        if end:
            events += session.end()
            state.sessions.close(key)
        return {
            "session": key,
            "seconds": round(session.seconds, 3),
            "events": events,
            "latest": session.latest,
            "stream": session.stream,
            "ended": end,
        }


def _decode(data: bytes) -> tuple[Any, int]:
    """Mono float32 samples and the rate of a piece of audio in any format soundfile reads."""
    import numpy as np
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - libsndfile's errors vary by format
        raise RequestError(
            f"not usable audio: {str(err).strip()[:160]}; {AUDIO_EXPECTED}"
        ) from None
    samples = samples.mean(axis=1)
    if not np.all(np.isfinite(samples)):
        raise RequestError("not usable audio: NaN or Inf samples; expected finite samples")
    return samples, int(rate)


def serve(
    specs: list[str], host: str = "127.0.0.1", port: int = 8501, max_body_mb: float = 50.0
) -> int:
    """Loads the exports named by ``specs`` and serves them until interrupted.

    Prints one ``serving ...`` line per model and the page's address on stdout (``port`` 0 picks
    a free port; the line gives it), then logs one line per request on stderr.
    """
    from werkzeug.serving import make_server

    from pipelines.serving.served import find_exports, load

    if not 0 <= port <= 65535:
        raise ServeError(f"--port: expected 0-65535 (0: any free port); got {port}")
    if not max_body_mb > 0:
        raise ServeError(f"--max-body-mb: expected a positive number; got {max_body_mb}")
    models = {export.name: load(export) for export in find_exports(specs)}
    app = create_app(models, max_body_mb)
    try:
        server = make_server(host, port, app, threaded=True)
    except SystemExit:  # werkzeug prints why it cannot bind (e.g. the port is in use), then exits
        raise ServeError(
            f"cannot listen on {host}:{port} (the reason is above): choose another --port "
            "(or --host)"
        ) from None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # its own request lines: ours only
    address = f"http://{host if ':' not in host else f'[{host}]'}:{server.port}"
    for name, served in models.items():
        print(f"serving {name} ({served.task}, {served.path}) at {address}/v1/models/{name}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach it can use the models")
    print(f"page: {address}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
