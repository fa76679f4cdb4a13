"""Plan and audience uploads, streamed to disk in chunks under names of our own, size-limited."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from loa.campaigns.audience import EXTENSIONS
from loa.engine.embedded import private_dir
from loa.errors import ApiError

PLAN_LIMIT = 1 << 20  # a plan is a page of TOML: a megabyte is already absurd
FIELDS = ("plan", "audience")
# control characters, path separators and NUL: a name with any of them is a trick, not a name
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")

# the request body of the upload endpoints, for the OpenAPI spec
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": list(FIELDS),
                    "properties": {
                        "plan": {
                            "type": "string",
                            "format": "binary",
                            "description": "the campaign plan, TOML, UTF-8",
                        },
                        "audience": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV, JSON lines or Parquet, by the file name's "
                            "extension (.csv, .txt, .jsonl, .ndjson, .parquet; others: CSV)",
                        },
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


@dataclass(slots=True)
class Upload:
    """A plan and an audience saved in a directory of their own."""

    directory: Path
    plan: Path
    audience: Path

    def remove(self) -> None:
        """Delete the files (after a dry run, or when the campaign was refused)."""
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(slots=True)
class Files:
    """Named parts of an upload saved in a directory of their own."""

    directory: Path
    paths: dict[str, Path]

    def remove(self) -> None:
        """Delete the files."""
        shutil.rmtree(self.directory, ignore_errors=True)


def uploads_root(data_dir: Path) -> Path:
    """Where uploads live while they are received and checked (a campaign then pins its own)."""
    return (data_dir / "uploads").resolve()


@dataclass
class Storage:
    """What uploads may take: bytes each, bytes in all (with pinned audiences), uploads at once,
    and the free disk they must leave."""

    root: Path
    pinned: Path
    limit: int
    total: int
    free_min: int
    concurrent: int
    active: int = 0

    @contextlib.contextmanager
    def slot(self, request: Request) -> Iterator[int]:
        """Admit one upload, or refuse it (429 busy, 413 too large, 507 out of room).

        Yields the bytes it may take.
        """
        if self.active >= self.concurrent:
            raise ApiError(
                f"{self.concurrent} uploads are being received; try again shortly",
                code="too_many_uploads",
                status=429,
            )
        room = self.room()
        check_length(request, self.limit)
        if room <= 0 or int(request.headers.get("content-length") or 0) > room:
            raise ApiError(
                "no room for this upload: the uploads' total or the disk's free space "
                "would go past its limit",
                code="insufficient_storage",
                status=507,
            )
        self.active += 1
        try:
            yield min(self.limit, room)
        finally:
            self.active -= 1

    def room(self) -> int:
        """Bytes an upload may take now, by the total and by the free disk."""
        used = _size(self.root) + _size(self.pinned)
        private_dir(self.root)
        free = shutil.disk_usage(self.root).free - self.free_min
        return min(self.total - used, free)


def _size(directory: Path) -> int:
    """Bytes of the files under `directory` (0 when there is none)."""
    total = 0
    for base, _, names in os.walk(directory):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(f"{what} is larger than {limit:,} bytes", code="too_large", status=413)


def check_length(request: Request, limit: int) -> None:
    """Refuse a body whose declared length is over `limit` before reading any of it."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise ApiError("Content-Length is not a number", code="bad_content_length")
    if int(declared) > limit:
        raise _too_large("the upload", limit)


async def receive(request: Request, storage: Storage) -> Upload:
    """Stream a multipart upload of `plan` and `audience` to disk; ApiError when it is wrong."""
    files = await receive_files(request, storage, FIELDS, FIELDS)
    return Upload(files.directory, files.paths["plan"], files.paths["audience"])


async def receive_files(
    request: Request, storage: Storage, parts: Sequence[str], required: Sequence[str]
) -> Files:
    """Stream a multipart upload of the named `parts` to disk; ApiError when it is wrong.

    A part named `plan` is a TOML plan (at most PLAN_LIMIT bytes); any other is a data file
    whose format its file name's extension says (CSV when it says none loa reads). The upload
    takes one of `storage`'s slots and at most the room it has.
    """
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise ApiError(
            f"send multipart/form-data with the parts {' and '.join(required)}",
            code="unsupported_media_type",
            status=415,
        )
    with storage.slot(request) as limit:
        boundary = options[b"boundary"]
        return await _receive(request, storage.root, limit, boundary, parts, required)


async def _receive(
    request: Request,
    root: Path,
    limit: int,
    boundary: bytes,
    parts: Sequence[str],
    required: Sequence[str],
) -> Files:
    private_dir(root)  # beside the append-only file, in the owner's data directory
    directory = root / secrets.token_hex(12)
    directory.mkdir(mode=0o700)
    sink = _Sink(directory, tuple(parts))
    try:
        await _stream(request, boundary, sink, limit)
        return Files(directory, sink.finish(required))
    except BaseException:
        sink.close()
        shutil.rmtree(directory, ignore_errors=True)
        raise


async def _stream(request: Request, boundary: bytes, sink: _Sink, limit: int) -> None:
    received = 0
    try:
        parser = MultipartParser(boundary, sink.callbacks())
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large("the upload", limit)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise ApiError(
            f"the multipart body is malformed: {exc}", code="bad_multipart", status=422
        ) from None
    except ClientDisconnect:
        raise ApiError("the upload was cut short", code="truncated_upload", status=422) from None
    if not sink.ended:
        raise ApiError("the upload was cut short", code="truncated_upload", status=422)


@dataclass
class _Sink:
    """Parser callbacks that write each part straight to its file."""

    directory: Path
    fields: tuple[str, ...] = FIELDS
    headers: dict[str, str] = field(default_factory=dict)
    header: list[bytes] = field(default_factory=lambda: [b"", b""])
    files: dict[str, Path] = field(default_factory=dict)
    handle: IO[bytes] | None = None
    written: int = 0
    limit: int = 0
    ended: bool = False

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._header(1, data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self.close,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self.headers = {}

    def _header(self, which: int, data: bytes) -> None:
        self.header[which] += data

    def _header_end(self) -> None:
        name, value = self.header
        self.headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
        self.header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("latin-1")
        if name not in self.fields:
            message = f"unknown part {name[:40]!r}: send only {' and '.join(self.fields)}"
            raise ApiError(message, code="unknown_field", status=422)
        if name in self.files:
            raise ApiError(f"the part {name!r} was sent twice", code="duplicate_field", status=422)
        suffix = _suffix(options.get(b"filename", b"").decode("latin-1"))
        path = self.directory / ("plan.toml" if name == "plan" else f"{name}{suffix}")
        self.files[name] = path
        self.limit = PLAN_LIMIT if name == "plan" else 0
        # our own name in a fresh directory; "x" refuses to follow or overwrite anything there
        self.handle = path.open("xb")
        self.written = 0

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.handle is None:
            return
        self.written += end - start
        if self.limit and self.written > self.limit:
            raise _too_large("the plan", self.limit)
        # small synchronous writes: chunks are the server's read size, the page cache takes them
        self.handle.write(data[start:end])

    def _end(self) -> None:
        self.ended = True

    def close(self) -> None:
        """Close the part being written, if any."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def finish(self, required: Sequence[str]) -> dict[str, Path]:
        missing = [name for name in required if name not in self.files]
        if missing:
            raise ApiError(f"missing part: {', '.join(missing)}", code="missing_field", status=422)
        return dict(self.files)


def _suffix(filename: str) -> str:
    """The audience format from the client's file name; the name itself is never a path here."""
    if _BAD_NAME.search(filename) or filename in (".", "..") or len(filename) > 255:
        raise ApiError(
            "a file name must be a plain name, without directories or control characters",
            code="bad_file_name",
            status=422,
        )
    suffix = PurePosixPath(filename).suffix.lower()
    return suffix if suffix in EXTENSIONS else ".csv"
