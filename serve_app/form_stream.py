"""A multipart/form-data body read as it arrives: one file part streams through, never held.

Starlette's own form parser spools an uploaded file to a temporary file before the route
sees it; an upload of a gigabyte would be written twice and read back. Here the route gets
the file's name as soon as its part headers arrive, then its bytes chunk by chunk, while
the small form fields are collected, wherever they sit in the body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

MAX_FIELD_BYTES = 64 * 1024
NOT_MULTIPART = "Send the file as multipart/form-data with a `file` part."
BAD_MULTIPART = "The body is not valid multipart/form-data."
FIELD_TOO_LONG = f"A form field is longer than {MAX_FIELD_BYTES} bytes."


class FormError(ValueError):
    """The body is not the multipart form asked for (answered 422)."""


class FormStream:
    """`filename = await form.start()`, then `async for chunk in form.file_chunks()`; after
    that `form.fields` holds every other field."""

    def __init__(self, request: Request, *, file_field: str = "file") -> None:
        content_type, options = parse_options_header(request.headers.get("content-type"))
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise FormError(NOT_MULTIPART)
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._file_field = file_field
        self._body = request.stream().__aiter__()
        self._ended = False
        self._pending: list[bytes] = []
        self._file_state = "before"  # before, open, done
        self._part: dict[str, bytes] = {}
        self._header = [b"", b""]
        self._value = bytearray()
        self._part_is_file = False
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_add(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._header_add(1, data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        })

    async def start(self) -> str:
        """Read up to the file part's headers; its file name (FormError if there is none)."""
        while self._file_state == "before" and await self._feed():
            pass
        if self.filename is None:
            raise FormError(NOT_MULTIPART)
        return self.filename

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive; then the rest of the body is read for its fields."""
        while True:
            if self._pending:
                chunk = b"".join(self._pending)
                self._pending.clear()
                yield chunk
            if self._file_state == "done":
                break
            if not await self._feed():
                raise FormError(BAD_MULTIPART)
        while await self._feed():
            pass

    async def _feed(self) -> bool:
        if self._ended:
            return False
        try:
            chunk = await self._body.__anext__()
        except StopAsyncIteration:
            self._ended = True
            self._parser.finalize()
            return False
        except ClientDisconnect:
            raise FormError("The client went away before the upload ended.") from None
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            raise FormError(BAD_MULTIPART) from None
        return True

    # ---- parser callbacks ---------------------------------------------------------------

    def _part_begin(self) -> None:
        self._part, self._value, self._part_is_file = {}, bytearray(), False

    def _header_add(self, index: int, data: bytes) -> None:
        self._header[index] += data

    def _header_end(self) -> None:
        self._part[self._header[0].decode("latin-1").lower()] = self._header[1]
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._part.get("content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if name == self._file_field and filename is not None and self._file_state == "before":
            self.filename = filename.decode("utf-8", "replace")
            self._file_state, self._part_is_file = "open", True
        self._part["name"] = name.encode()
        self._part["is_file"] = b"1" if filename is not None else b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part_is_file:
            self._pending.append(bytes(data[start:end]))
        elif not self._part.get("is_file"):  # other files are dropped, fields kept
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise FormError(FIELD_TOO_LONG)

    def _part_end(self) -> None:
        if self._part_is_file:
            self._file_state = "done"
        elif not self._part.get("is_file"):
            name = self._part["name"].decode()
            self.fields[name] = self._value.decode("utf-8", "replace")
