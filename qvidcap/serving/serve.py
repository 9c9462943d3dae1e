"""Caption uploaded videos over HTTP: `POST /upload` (multipart field `video`) and `GET /health`.

One `CaptionPipeline` (model, tokenizer, extractors loaded once) serves every request; the pipeline
serialises the model calls itself, so concurrent requests decode in parallel and never mix results.
The app is served by waitress, never by Flask's development server, on 127.0.0.1 unless told otherwise.
Uploads are written under random names in the upload folder and removed once captioned; the client's
file name is never used as a path. Every error, 404 and 500 included, is answered as JSON.

`ServerProcess` runs `qvidcap serve` in a child process on a free local port, for the demo notebook
and the tests.
"""
from __future__ import annotations

import argparse
import atexit
import logging
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from qvidcap.config import ServeConfig, StudyConfig

if TYPE_CHECKING:
    from qvidcap.serving.inference import Caption

logger = logging.getLogger(__name__)

VIDEO_FIELD = "video"  # the multipart field an upload comes in
# suffixes kept on the stored upload (some demuxers look at them); anything else is stored as ".bin"
KNOWN_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".gif"}
COPY_CHUNK_BYTES = 1 << 20
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Captioner(Protocol):
    """What the API needs from a pipeline: a video file in, a `Caption` (see qvidcap.serving.inference) out."""

    def caption(self, path: str | Path) -> "Caption": ...


class ServerStartError(RuntimeError):
    """`qvidcap serve` did not come up (it exited, or never answered /health)."""


def create_app(pipeline: Captioner, serve_config: ServeConfig):
    """The Flask app of the API around one shared `pipeline`; serve it with `run_server`, not `app.run`."""
    from flask import Flask, jsonify, request
    from flask_cors import CORS
    from werkzeug.exceptions import BadRequest, HTTPException, UnsupportedMediaType

    from qvidcap.video import VideoDecodeError

    max_bytes = max_body_bytes(serve_config)
    upload_folder = Path(serve_config.upload_folder).resolve()
    upload_folder.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    app.json.sort_keys = False
    origins = [o.strip() for o in serve_config.cors_origins.split(",") if o.strip()]
    CORS(app, origins=origins or "*")

    def error(status: int, name: str, message: str):
        return jsonify({"error": name, "message": message}), status

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        if e.code == 413:
            return error(413, e.name, f"the upload is larger than the server's limit of "
                                      f"{serve_config.max_upload_mb:g} MiB (serve.max_upload_mb)")
        return error(e.code or 500, e.name, e.description or e.name)

    @app.errorhandler(Exception)
    def unexpected_error(e: Exception):
        logger.exception("request %s %s failed", request.method, request.path)
        return error(500, "Internal Server Error", "the server failed on this request; its log has the details")

    @app.get("/health")
    def health():
        return jsonify({"status": "ok"})

    @app.post("/upload")
    def upload():
        sent = request.files.get(VIDEO_FIELD)
        if sent is None:
            raise BadRequest(f"no file in the multipart field {VIDEO_FIELD!r}; send it as -F {VIDEO_FIELD}=@clip.mp4")
        stored = upload_folder / f"{uuid.uuid4().hex}{_safe_suffix(sent.filename)}"  # never the client's name
        try:
            size = _save_stream(sent.stream, stored)
            if size == 0:
                raise BadRequest("the uploaded file is empty; send a video file")
            try:
                result = pipeline.caption(stored)
            except VideoDecodeError as e:
                logger.info("upload of %d bytes is not a decodable video: %s", size, e)
                raise UnsupportedMediaType("the upload is not a video that can be decoded "
                                           "(send an mp4, webm, mkv, avi or mov file)") from e
        finally:
            stored.unlink(missing_ok=True)
        return jsonify(_response(result))

    return app


def max_body_bytes(serve_config: ServeConfig) -> int:
    """`serve.max_upload_mb` in bytes: the largest request body the API reads."""
    if serve_config.max_upload_mb <= 0:
        raise ValueError(f"serve.max_upload_mb must be positive, got {serve_config.max_upload_mb!r}")
    return int(serve_config.max_upload_mb * 2**20)


def run_server(app, serve_config: ServeConfig) -> None:
    """Serve `app` with waitress until interrupted (blocking)."""
    from waitress import serve

    limit = max_body_bytes(serve_config)
    if serve_config.host not in LOOPBACK_HOSTS:
        logger.warning("binding %s: the API is reachable from other machines; it has no authentication",
                       serve_config.host)
    logger.info("serving POST /upload on http://%s:%d (uploads up to %.1f MiB, %d threads)",
                serve_config.host, serve_config.port, limit / 2**20, serve_config.threads)
    # waitress buffers a whole body before the app sees it; its own (plain-text) limit sits well above
    # the app's so that oversized uploads get the app's JSON 413, while absurd bodies are still cut off
    serve(app, host=serve_config.host, port=serve_config.port, threads=serve_config.threads,
          max_request_body_size=4 * limit + 16 * 2**20, ident="qvidcap")


def _safe_suffix(filename: str | None) -> str:
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in KNOWN_SUFFIXES else ".bin"


def _save_stream(stream, path: Path) -> int:
    """Copy an upload stream to `path` chunk by chunk; the number of bytes written."""
    size = 0
    with open(path, "wb") as out:
        while chunk := stream.read(COPY_CHUNK_BYTES):
            out.write(chunk)
            size += len(chunk)
    return size


def _response(result: "Caption") -> dict:
    """What a client sees: the caption and the seconds per stage, never the server-side path."""
    return {"caption": result.caption, "timings": result.timings.to_dict()}


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

    serve_config = config.serve
    for name in ("host", "port", "upload_folder", "max_upload_mb", "threads"):
        if getattr(args, name) is not None:
            setattr(serve_config, name, getattr(args, name))
    try:
        pipeline = CaptionPipeline.from_checkpoint(args.checkpoint, device=resolve_device(config.device))
    except (CheckpointError, OSError) as e:
        print(f"qvidcap serve: {e}", file=sys.stderr)
        return 2
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
