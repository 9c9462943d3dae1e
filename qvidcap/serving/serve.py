"""Caption uploaded videos over HTTP: `POST /upload` (multipart field `video`) and `GET /health`.

One `CaptionPipeline` (model, tokenizer, extractors loaded once) serves every request; the pipeline
serialises the model calls itself, so concurrent requests decode in parallel and never mix results.
The app is served by waitress, never by Flask's development server, on 127.0.0.1 unless told otherwise.
Every error, waitress's own (bad request line, bad Content-Length, oversized headers) and 404 and 500
included, is answered as JSON `{"error": ..., "message": ...}`. A caption is answered as
`{"caption", "timings", "trained_on"}`: `trained_on` says which data the checkpoint learned
(`dataset`, `train_clips`, and a `note` on what that means for its captions; `inference.trained_on`).

What one request may take is bounded (`ServeConfig`): the body (`max_upload_mb`, refused on its
Content-Length before it is read, a chunked body cut off at the limit), the clip (the decode bounds
of `video.check_header` and `max_video_seconds`, checked on the header before decoding), the time
(`request_timeout_s`, then 504), and the memory: decodes run at once only as many as
`decode_memory_mb` holds (`video.decode_memory_bytes` each), and one worker thread is always kept
for `/health`, so uploads beyond that are answered 503 at once instead of queueing.
Uploads are stored once, under the server's own names (`upload.upload_path`), straight from the
body waitress buffered (werkzeug's own spool file is skipped), and removed once captioned; leftovers
of a crashed server are removed when the next one starts.

`ServerProcess` runs `qvidcap serve` in a child process on a free local port, for the demo notebook
and the tests.
"""
from __future__ import annotations

import argparse
import atexit
import json
import logging
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from qvidcap.config import SamplingConfig, ServeConfig, StudyConfig

if TYPE_CHECKING:
    from qvidcap.serving.inference import Caption

logger = logging.getLogger(__name__)

VIDEO_FIELD = "video"  # the multipart field an upload comes in
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
RETRY_AFTER_S = 5  # what a 503 tells the client to wait


class Captioner(Protocol):
    """What the API needs from a pipeline: a video file in, a `Caption` (see qvidcap.serving.inference) out."""

    def caption(self, path: str | Path) -> "Caption": ...


class ServerStartError(RuntimeError):
    """`qvidcap serve` did not come up (it exited, or never answered /health)."""


class Limits:
    """The per-request bounds of one app: upload slots, decode slots (sized from memory) and the deadline."""

    def __init__(self, serve_config: ServeConfig, sampling: SamplingConfig):
        from qvidcap.video import decode_memory_bytes

        if serve_config.request_timeout_s <= 0 or serve_config.decode_memory_mb <= 0:
            raise ValueError(f"serve.request_timeout_s and serve.decode_memory_mb must be positive, got "
                             f"{serve_config.request_timeout_s!r} and {serve_config.decode_memory_mb!r}")
        self.upload_slots = max(1, serve_config.threads - 1)  # one waitress thread stays free for /health
        self.decode_bytes = decode_memory_bytes(sampling)
        budget = int(serve_config.decode_memory_mb * 2**20 // self.decode_bytes)
        self.decode_slots = max(1, min(self.upload_slots, budget))
        self.timeout_s = serve_config.request_timeout_s
        self.uploads = threading.BoundedSemaphore(self.upload_slots)
        self.decodes = threading.BoundedSemaphore(self.decode_slots)
        # the captions run here so that a request past its deadline can be answered while its decode finishes
        self.workers = ThreadPoolExecutor(max_workers=self.decode_slots, thread_name_prefix="caption")


def create_app(pipeline: Captioner, serve_config: ServeConfig, sampling: SamplingConfig | None = None):
    """The Flask app of the API around one shared `pipeline`; serve it with `run_server`, not `app.run`.

    `sampling` sizes the decode slots; by default the pipeline's own (`pipeline.config.sampling`).
    """
    from flask import Flask, jsonify, request
    from werkzeug.exceptions import (BadRequest, HTTPException, RequestEntityTooLarge, ServiceUnavailable,
                                     UnsupportedMediaType)

    from qvidcap.serving.upload import receive_upload, remove_stale_uploads
    from qvidcap.video import VideoBoundsError, VideoDecodeError, check_header, read_header

    max_bytes = max_body_bytes(serve_config)
    if sampling is None:
        sampling = getattr(getattr(pipeline, "config", None), "sampling", None) or SamplingConfig()
    limits = Limits(serve_config, sampling)
    upload_folder = Path(serve_config.upload_folder).resolve()
    upload_folder.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_uploads(upload_folder)
    logger.info("removed %d stale upload(s) left in %s by servers no longer running", stale, upload_folder)
    if limits.decode_bytes > serve_config.decode_memory_mb * 2**20:
        logger.warning("one decode may take %.0f MiB, more than serve.decode_memory_mb=%g; decoding one at a time",
                       limits.decode_bytes / 2**20, serve_config.decode_memory_mb)
    logger.info("%d upload(s) at once, %d decode(s) at once (%.0f MiB each of serve.decode_memory_mb=%g), "
                "%g s per request", limits.upload_slots, limits.decode_slots, limits.decode_bytes / 2**20,
                serve_config.decode_memory_mb, limits.timeout_s)
    trained = _trained_on(pipeline)
    if trained is not None:
        logger.info("%s", trained["note"])
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = request_body_limit(serve_config)
    app.json.sort_keys = False
    app.limits = limits
    origins = [o.strip() for o in serve_config.cors_origins.split(",") if o.strip()]
    if origins:  # no CORS headers at all otherwise: browsers then refuse cross-origin calls
        from flask_cors import CORS

        CORS(app, origins="*" if "*" in origins else origins)

    def error(status: int, name: str, message: str, headers: dict | None = None):
        return jsonify({"error": name, "message": message}), status, headers or {}

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        if e.code == 413 and e.description == RequestEntityTooLarge.description:  # werkzeug's own, no cause named
            return error(413, e.name, f"the upload is larger than {size_limit_text(serve_config)}")
        headers = {"Retry-After": str(RETRY_AFTER_S)} if e.code == 503 else None
        return error(e.code or 500, e.name, e.description or e.name, headers)

    @app.errorhandler(Exception)
    def unexpected_error(e: Exception):
        logger.exception("request %s %s failed", request.method, request.path)
        return error(500, "Internal Server Error", "the server failed on this request; its log has the details")

    @app.get("/health")
    def health():
        return jsonify({"status": "ok"})

    @app.post("/upload")
    def upload():
        started = time.monotonic()
        if not limits.uploads.acquire(blocking=False):
            raise ServiceUnavailable(f"the server is captioning {limits.upload_slots} upload(s) already, its "
                                     f"limit (serve.threads - 1); retry in a few seconds")
        try:
            return _upload(started)
        finally:
            limits.uploads.release()

    def _upload(started: float):
        if request.mimetype != "multipart/form-data" or "boundary" not in request.mimetype_params:
            raise BadRequest(f"no file in the multipart field {VIDEO_FIELD!r}; send it as -F {VIDEO_FIELD}=@clip.mp4")
        received = receive_upload(request.stream, request.mimetype_params["boundary"].encode("latin-1"),
                                  upload_folder, VIDEO_FIELD, max_bytes, size_limit_text(serve_config))
        handed_over = False
        try:
            if received.size == 0:
                raise BadRequest("the uploaded file is empty; send a video file")
            try:
                header = read_header(received.path)
                check_header(received.path, header, sampling, max(sampling.keyframe_size, sampling.temporal_size))
            except VideoBoundsError as e:
                logger.info("upload of %d bytes refused: %s", received.size, e.reason)
                raise UnsupportedMediaType(f"the video is outside what the server decodes: {e.reason}") from e
            except VideoDecodeError as e:
                logger.info("upload of %d bytes is not a decodable video: %s", received.size, e)
                raise UnsupportedMediaType(_not_a_video()) from e
            if header.seconds > serve_config.max_video_seconds:
                raise RequestEntityTooLarge(f"the video lasts {header.seconds:.0f} s, longer than the server's "
                                            f"limit of {serve_config.max_video_seconds:g} s (serve.max_video_seconds)")
            if not limits.decodes.acquire(timeout=_left(started)):
                raise ServiceUnavailable(f"all {limits.decode_slots} decode slot(s) stayed busy for "
                                         f"{limits.timeout_s:g} s (serve.request_timeout_s); retry later")
            future = limits.workers.submit(_caption_and_clean_up, pipeline, received.path, limits.decodes)
            handed_over = True
            try:
                result = future.result(timeout=_left(started))
            except FutureTimeout:
                logger.warning("upload of %d bytes passed its %g s deadline; its caption is dropped",
                               received.size, limits.timeout_s)
                return error(504, "Gateway Timeout", f"captioning took longer than the server's limit of "
                                                     f"{limits.timeout_s:g} s (serve.request_timeout_s)")
            except VideoDecodeError as e:
                logger.info("upload of %d bytes is not a decodable video: %s", received.size, e)
                raise UnsupportedMediaType(_not_a_video()) from e
        finally:
            if not handed_over:
                received.path.unlink(missing_ok=True)
        return jsonify(_response(result, trained))

    def _left(started: float) -> float:
        return max(0.0, limits.timeout_s - (time.monotonic() - started))

    return app


def _caption_and_clean_up(pipeline: Captioner, path: Path, decodes: threading.BoundedSemaphore):
    """One caption on a worker thread; it frees its decode slot and removes the upload even when the
    request that asked for it was already answered (504)."""
    try:
        return pipeline.caption(path)
    finally:
        decodes.release()
        path.unlink(missing_ok=True)  # after the release: an empty folder means the slot is free again


def _not_a_video() -> str:
    from qvidcap.serving.upload import ACCEPTED_SUFFIXES

    return f"the upload is not a video that can be decoded (send one of {', '.join(ACCEPTED_SUFFIXES)})"


def max_body_bytes(serve_config: ServeConfig) -> int:
    """`serve.max_upload_mb` in bytes: the largest uploaded file the API stores."""
    if serve_config.max_upload_mb <= 0:
        raise ValueError(f"serve.max_upload_mb must be positive, got {serve_config.max_upload_mb!r}")
    return int(serve_config.max_upload_mb * 2**20)


def request_body_limit(serve_config: ServeConfig) -> int:
    """The largest request body read: the file limit plus the multipart framing around it."""
    from qvidcap.serving.upload import FORM_OVERHEAD_BYTES

    return max_body_bytes(serve_config) + FORM_OVERHEAD_BYTES


def size_limit_text(serve_config: ServeConfig) -> str:
    return f"the server's limit of {serve_config.max_upload_mb:g} MiB (serve.max_upload_mb)"


def waitress_settings(serve_config: ServeConfig) -> dict:
    """waitress's own limits, set deliberately (its defaults let 100 idle sockets lock everyone out for
    two minutes, and read bodies far past the app's limit)."""
    for name in ("connection_limit", "channel_timeout_s", "cleanup_interval_s"):
        if getattr(serve_config, name) <= 0:
            raise ValueError(f"serve.{name} must be positive, got {getattr(serve_config, name)!r}")
    return dict(
        host=serve_config.host, port=serve_config.port, threads=max(2, serve_config.threads), ident="qvidcap",
        # waitress refuses a larger Content-Length before reading the body, and stops a chunked body here
        max_request_body_size=request_body_limit(serve_config),
        connection_limit=serve_config.connection_limit,
        channel_timeout=serve_config.channel_timeout_s,
        cleanup_interval=serve_config.cleanup_interval_s,
        asyncore_use_poll=True,  # select() cannot watch sockets numbered over 1024
    )


def json_error_channel(serve_config: ServeConfig):
    """waitress's HTTPChannel answering its own errors (bad request line or Content-Length, oversized
    headers or body, unsupported Transfer-Encoding) as the API's JSON instead of plain text."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self):
            e = self.request.error
            if e.code == 413:
                message = f"the upload is larger than {size_limit_text(serve_config)}"
            else:
                message = f"{e.body}" if e.body else e.reason
            body = json.dumps({"error": e.reason, "message": message}).encode()
            self.status = f"{e.code} {e.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorChannel


def run_server(app, serve_config: ServeConfig) -> None:
    """Serve `app` with waitress until interrupted (blocking)."""
    from waitress.server import BaseWSGIServer, create_server

    settings = waitress_settings(serve_config)
    if serve_config.host not in LOOPBACK_HOSTS:
        logger.warning("binding %s: the API is reachable from other machines; it has no authentication",
                       serve_config.host)
    logger.info("serving POST /upload on http://%s:%d (uploads up to %g MiB, %d threads, %d connections, "
                "idle ones closed after %g s)", serve_config.host, serve_config.port, serve_config.max_upload_mb,
                settings["threads"], serve_config.connection_limit, serve_config.channel_timeout_s)
    server = create_server(app, **settings)
    channel = json_error_channel(serve_config)
    sockets = getattr(server, "map", None) or getattr(server, "_map", None) or {}  # a MultiSocketServer's, or its own
    for listener in {id(s): s for s in [server, *sockets.values()]}.values():
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = channel
    try:
        server.run()
    finally:
        app.limits.workers.shutdown(wait=False, cancel_futures=True)


def _response(result: "Caption", trained_on: dict | None = None) -> dict:
    """What a client sees: the caption, the seconds per stage and, when known, which data the checkpoint
    was trained on (`trained_on`: dataset, train_clips, note); never the server-side path."""
    answer = {"caption": result.caption, "timings": result.timings.to_dict()}
    if trained_on is not None:
        answer["trained_on"] = trained_on
    return answer


def _trained_on(pipeline: Captioner) -> dict | None:
    """`TrainedOn.to_dict()` of a pipeline that carries its checkpoint's config; None for one that does not."""
    from qvidcap.serving.inference import trained_on

    config = getattr(pipeline, "config", None)
    return trained_on(config).to_dict() if isinstance(config, StudyConfig) else None


# ---------------------------------------------------------------- the `qvidcap serve` command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. outputs/checkpoints/qvidcap/best)")
    parser.add_argument("--host", default=None, help="interface to bind (default: serve.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: serve.port, 5000)")
    parser.add_argument("--upload-folder", default=None, help="where uploads are stored while captioned (default: serve.upload_folder)")
    parser.add_argument("--max-upload-mb", type=float, default=None, help="largest upload in MiB (default: serve.max_upload_mb)")
    parser.add_argument("--threads", type=int, default=None, help="waitress worker threads (default: serve.threads)")


def main(args: argparse.Namespace, config: StudyConfig) -> int:
    from qvidcap.model.checkpoint import CheckpointError
    from qvidcap.runtime.env import resolve_device
    from qvidcap.serving.inference import CaptionPipeline
    from qvidcap.video import apply_decode_bounds

    serve_config = config.serve
    for name in ("host", "port", "upload_folder", "max_upload_mb", "threads"):
        if getattr(args, name) is not None:
            setattr(serve_config, name, getattr(args, name))
    try:
        pipeline = CaptionPipeline.from_checkpoint(args.checkpoint, device=resolve_device(config.device))
    except (CheckpointError, OSError) as e:
        print(f"qvidcap serve: {e}", file=sys.stderr)
        return 2
    apply_decode_bounds(pipeline.config.sampling, config.sampling)  # the sizes stay the checkpoint's
    run_server(create_app(pipeline, serve_config), serve_config)
    return 0


# ---------------------------------------------------------------- a server in a child process


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`qvidcap serve` in a child process: `start()` waits until /health answers, `stop()` ends it.

    Use it as a context manager. The child's output goes to `log_path`; its tail is in the error
    raised when the server does not come up.
    """

    def __init__(self, checkpoint: str | Path, upload_folder: str | Path, port: int | None = None,
                 host: str = "127.0.0.1", device: str = "cpu", max_upload_mb: float | None = None,
                 extra_args: tuple[str, ...] = (), startup_timeout_s: float = 180.0):
        self.host = host
        self.port = port or free_port(host)
        self.upload_folder = Path(upload_folder)
        self.startup_timeout_s = startup_timeout_s
        self.command = [sys.executable, "-m", "qvidcap.cli", "serve", "--checkpoint", str(checkpoint),
                        "--device", device, "--host", host, "--port", str(self.port),
                        "--upload-folder", str(self.upload_folder), *extra_args]
        if max_upload_mb is not None:
            self.command += ["--max-upload-mb", str(max_upload_mb)]
        self.log_path = Path(tempfile.mkstemp(prefix="qvidcap-serve-", suffix=".log")[1])
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id (None before `start`)."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerProcess":
        import requests

        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        atexit.register(self.stop)  # never leave a server behind when the notebook or test process ends
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise ServerStartError(f"qvidcap serve exited with code {self._process.returncode}:\n{tail}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    logger.info("qvidcap serve is up at %s", self.url)
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise ServerStartError(f"qvidcap serve did not answer {self.url}/health within {self.startup_timeout_s:.0f} s:\n{tail}")

    def stop(self) -> None:
        """End the child process (terminate, then kill after 15 s) and remove its log."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=15)
        self.log_path.unlink(missing_ok=True)
        atexit.unregister(self.stop)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(checkpoint: str | Path, upload_folder: str | Path, **kwargs) -> ServerProcess:
    """Start `qvidcap serve` on a free local port and wait for it; call `.stop()` (or use `with`) after."""
    return ServerProcess(checkpoint, upload_folder, **kwargs).start()
