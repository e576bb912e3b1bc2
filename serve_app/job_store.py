"""Where bulk jobs keep their files: a local directory or any URI that ``pyarrow.fs`` opens.

Each job has a folder named by its id, holding ``input.<suffix>`` (the upload) and
``result.<format>`` (written by the job). A file appears under its name only when complete:
an upload is written as ``<name>.part`` and moved into place at its end, and the job's
pipeline publishes its result the same way, so a half-written file is never served.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import AsyncIterator
from pathlib import Path

from pyarrow import fs as pafs
from sqlalchemy.engine import make_url

from serve_app.settings import Settings

READ_CHUNK_BYTES = 1 << 20
# Uploads arrive in small HTTP chunks; the store is written in larger pieces, off the loop.
WRITE_CHUNK_BYTES = 4 << 20


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def default_store_root(settings: Settings) -> str:
    """`jobs/` beside the SQLite file, else `./jobs`."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return str(Path(url.database).resolve().parent / "jobs")
    return str(Path("jobs").resolve())


class JobStore:
    def __init__(self, root: str) -> None:
        if "://" in root:
            self._fs, base = pafs.FileSystem.from_uri(root)
            scheme = root.split("://", 1)[0]
            self._prefix = "" if scheme == "file" else f"{scheme}://"
        else:
            self._fs, base, self._prefix = pafs.LocalFileSystem(), str(Path(root).resolve()), ""
        self._base = base.rstrip("/")
        self._fs.create_dir(self._base, recursive=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        return cls(settings.job_store or default_store_root(settings))

    # ---- names ---------------------------------------------------------------------------

    def path(self, job_id: str, name: str) -> str:
        return posixpath.join(self._base, job_id, name)

    def uri(self, path: str) -> str:
        """What the Ray job opens: a local path, or the URI with its scheme."""
        return f"{self._prefix}{path}"

    def path_of(self, uri: str) -> str:
        return uri[len(self._prefix):] if self._prefix and uri.startswith(self._prefix) else uri

    # ---- files ---------------------------------------------------------------------------

    async def receive(self, path: str, chunks: AsyncIterator[bytes], *, limit: int) -> int:
        """Write `chunks` to `path`, published only once all arrived; returns the size.
        Raises UploadTooLarge (and keeps nothing) past `limit` bytes."""
        part = f"{path}.part"
        await asyncio.to_thread(self._fs.create_dir, posixpath.dirname(path), recursive=True)
        stream = await asyncio.to_thread(self._fs.open_output_stream, part)
        size, pending = 0, bytearray()
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                pending += chunk
                if len(pending) >= WRITE_CHUNK_BYTES:
                    await asyncio.to_thread(stream.write, bytes(pending))
                    pending.clear()
            if pending:
                await asyncio.to_thread(stream.write, bytes(pending))
            await asyncio.to_thread(stream.close)
            await asyncio.to_thread(self._fs.move, part, path)
        except BaseException:
            await asyncio.to_thread(_close_quietly, stream)
            await asyncio.to_thread(self._delete_file, part)
            raise
        return size

    def size(self, path: str) -> int | None:
        info = self._fs.get_file_info(path)
        return info.size if info.type == pafs.FileType.File else None

    async def read(self, path: str) -> AsyncIterator[bytes]:
        stream = await asyncio.to_thread(self._fs.open_input_stream, path)
        try:
            while chunk := await asyncio.to_thread(stream.read, READ_CHUNK_BYTES):
                yield chunk
        finally:
            await asyncio.to_thread(stream.close)

    def delete_job(self, job_id: str) -> None:
        folder = posixpath.join(self._base, job_id)
        if self._fs.get_file_info(folder).type == pafs.FileType.Directory:
            self._fs.delete_dir(folder)

    def _delete_file(self, path: str) -> None:
        if self._fs.get_file_info(path).type == pafs.FileType.File:
            self._fs.delete_file(path)


def _close_quietly(stream) -> None:
    try:
        stream.close()
    except OSError:
        pass
