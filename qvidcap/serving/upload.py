"""Receive one multipart upload straight from the request stream into its file in the upload folder.

werkzeug's form parser spools every file part to a temporary file of its own, which the API then
copied again; here the one file part is written once, where it is captioned from. Parsing it here
also names the real cause of a refusal (too many parts, a text field too large, the file too large),
where werkzeug raises the same bare 413 for all three. Uploads are named
`qvidcap-upload-<pid>-<random hex><suffix>` so that a restarted server can tell its own leftovers
(from a server process that no longer runs) from anything else in the folder.
"""
from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

logger = logging.getLogger(__name__)

# suffixes kept on the stored upload (some demuxers look at them); anything else is stored as ".bin"
# and still tried. GIF is refused outright: decord cannot measure a GIF's duration and fails on every one.
ACCEPTED_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts")
REFUSED_SUFFIXES = {".gif": "GIF animations cannot be decoded here; convert it to mp4 "
                            "(ffmpeg -i clip.gif clip.mp4) and upload that"}
MAX_FORM_PARTS = 16  # the API needs one part; a few extra fields are tolerated and ignored
MAX_FIELD_BYTES = 64 * 1024  # a text field of the form (the API reads none)
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart framing and small fields on top of the file itself
READ_CHUNK_BYTES = 1 << 20
UPLOAD_PREFIX = "qvidcap-upload-"
UPLOAD_NAME = re.compile(rf"^{UPLOAD_PREFIX}(?P<pid>\d+)-[0-9a-f]{{32}}(\.[a-z0-9]{{1,5}})?$")


@dataclass
class Received:
    """The stored upload: where it is, how many bytes, and the client's file name (never used as a path)."""

    path: Path
    size: int
    filename: str


def upload_path(folder: Path, filename: str | None) -> Path:
    """A fresh name in `folder` for an upload, keeping a known suffix; never the client's name."""
    return folder / f"{UPLOAD_PREFIX}{os.getpid()}-{uuid.uuid4().hex}{_safe_suffix(filename)}"


def _safe_suffix(filename: str | None) -> str:
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in ACCEPTED_SUFFIXES else ".bin"


def receive_upload(stream, boundary: bytes, folder: Path, field: str, max_file_bytes: int,
                   limit_text: str) -> Received:
    """Write the file part named `field` of a multipart body read from `stream` to a new file in `folder`.

    Raises a werkzeug HTTPException naming the cause: 413 for a file over `max_file_bytes` (the
    message ends with `limit_text`), too many parts, or a text field over MAX_FIELD_BYTES; 400 for no
    such part or a malformed body; 415 for a refused suffix. A partial file is removed on any failure.
    """
    decoder = MultipartDecoder(boundary)
    received: Received | None = None
    out = None
    writing = False  # inside the file part being stored
    parts = 0
    part = None  # the Field/File being read
    field_bytes = 0
    try:
        while True:
            data = stream.read(READ_CHUNK_BYTES)
            decoder.receive_data(data or None)
            event = decoder.next_event()
            while not isinstance(event, (NeedData, Epilogue)):
                if isinstance(event, (Field, File)):
                    parts += 1
                    if parts > MAX_FORM_PARTS:
                        raise RequestEntityTooLarge(f"the form has more than {MAX_FORM_PARTS} parts; send one "
                                                    f"file in the field {field!r} and nothing else")
                    part, field_bytes = event, 0
                    if isinstance(event, File) and event.name == field and received is None:
                        refused = REFUSED_SUFFIXES.get(Path(event.filename or "").suffix.lower())
                        if refused:
                            raise UnsupportedMediaType(refused)
                        received = Received(upload_path(folder, event.filename), 0, event.filename or "")
                        out = open(received.path, "xb")
                        writing = True
                elif isinstance(event, Data):
                    if writing:
                        received.size += len(event.data)
                        if received.size > max_file_bytes:
                            raise RequestEntityTooLarge(f"the upload is larger than {limit_text}")
                        out.write(event.data)
                        if not event.more_data:
                            out.close()
                            writing = False
                    elif isinstance(part, Field):
                        field_bytes += len(event.data)
                        if field_bytes > MAX_FIELD_BYTES:
                            raise RequestEntityTooLarge(f"the form field {part.name!r} is larger than "
                                                        f"{MAX_FIELD_BYTES // 1024} KiB; the API reads only the "
                                                        f"file in the field {field!r}")
                event = decoder.next_event()
            if isinstance(event, Epilogue) or not data:
                break
    except ValueError as e:  # the decoder's "unexpected end of form" and friends
        _discard(out, received)
        raise BadRequest(f"the multipart body is malformed ({e}); send the file with -F {field}=@clip.mp4") from e
    except BaseException:
        _discard(out, received)
        raise
    if writing:  # the body ended inside the file part
        _discard(out, received)
        raise BadRequest("the multipart body ended before the file did; was the upload cut off?")
    if received is None:
        raise BadRequest(f"no file in the multipart field {field!r}; send it as -F {field}=@clip.mp4")
    return received


def _discard(out, received: Received | None) -> None:
    if out is not None:
        out.close()
    if received is not None:
        received.path.unlink(missing_ok=True)


def remove_stale_uploads(folder: Path) -> int:
    """Delete uploads left in `folder` by server processes that no longer run (a crash, kill -9);
    only files named by `upload_path`, never anything else. Returns how many were removed."""
    removed = 0
    for path in folder.iterdir():
        match = UPLOAD_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _alive(pid):
            continue  # this process's own, or another server's still running on the same folder
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
