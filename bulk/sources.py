"""Input files: which format a path holds, a fast check before any Ray work, the Ray Data read.

A path is a local path or any URI that `pyarrow.fs` opens (`s3://`, `gs://`, `file://`). The
format comes from the suffix: `.csv`, `.jsonl` / `.ndjson` / `.json` (JSON Lines) or `.parquet`
(a file or a directory of files).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs

if TYPE_CHECKING:
    import ray.data

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}  # fmt: skip
# A JSON Lines value that is not text reaches the scorer with what is wrong with it in this
# column (never written out).
PROBLEM_COLUMN = "__bulk_problem"
# Lines of a JSON Lines file read to find its columns before accepting it.
JSONL_SAMPLE_LINES = 1000
# Blocks of about this size flow through the pipeline: small enough that memory holds only a
# few per process and the actors share the work evenly to the end, large enough that Ray's
# cost per block stays small next to the model's.
BLOCK_BYTES = 128 * 1024
JSONL_LINES_PER_BLOCK = 1024


class InputError(ValueError):
    """The input cannot be scored as asked: unreadable, unsupported, or lacking a column."""


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path on it; a plain path is local (made absolute)."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
            raise InputError(f"cannot open {uri}: {err}") from err
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def input_format(uri: str) -> str:
    suffix = os.path.splitext(uri.rstrip("/"))[1].lower()
    if suffix not in FORMATS:
        raise InputError(f"unsupported input {uri!r}: the name must end in "
                         f"{', '.join(sorted(FORMATS))}")  # fmt: skip
    return FORMATS[suffix]


def csv_options(column: str) -> dict:
    """The text column stays text even when it looks like numbers; quoted newlines are part
    of a value (reviews hold paragraphs)."""
    return {"parse_options": pacsv.ParseOptions(newlines_in_values=True),
            "convert_options": pacsv.ConvertOptions(column_types={column: pa.string()})}


def check_input(input_uri: str, column: str, keep: list[str]) -> int | None:
    """Check format, readability and columns without Ray; the row count when the file's
    metadata gives it (Parquet), else None. Raises InputError naming the problem."""
    fmt = input_format(input_uri)
    filesystem, path = resolve(input_uri)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{input_uri} does not exist")
    try:
        if fmt == "parquet":
            dataset = pads.dataset(path, filesystem=filesystem, format="parquet")
            _require_columns(dataset.schema.names, column, keep, input_uri)
            return dataset.count_rows()
        if info.type != pafs.FileType.File:
            raise InputError(f"{input_uri} is not a file")
        with filesystem.open_input_stream(path) as stream:
            if fmt == "csv":
                names = pacsv.open_csv(stream, **csv_options(column)).schema.names
            else:
                names = _jsonl_columns(stream, input_uri)
        _require_columns(names, column, keep, input_uri)
        return None
    except InputError:
        raise
    except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
        raise InputError(f"{input_uri} is not a readable {fmt} file: {err}") from err


def _jsonl_columns(stream, uri: str) -> list[str]:
    names: dict[str, None] = {}
    for number, line in enumerate(lines(stream)):
        if number >= JSONL_SAMPLE_LINES:
            break
        if not line.strip():
            continue
        if number == 0 and line.lstrip().startswith("["):
            raise InputError(f"{uri} holds a JSON array; give JSON Lines (one object a line)")
        try:
            record = json.loads(line)
        except ValueError as err:
            if number == 0:
                raise InputError(f"{uri} is not JSON Lines: line 1: {err}") from err
            continue  # a bad line later on becomes an error row
        if isinstance(record, dict):
            names.update(dict.fromkeys(record))
    return list(names)


def lines(stream, chunk_size: int = 1 << 16) -> Iterator[str]:
    """Text lines of a binary stream, read a chunk at a time."""
    pending = b""
    while chunk := stream.read(chunk_size):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


def _require_columns(names: list[str], column: str, keep: list[str], uri: str) -> None:
    missing = [name for name in [column, *keep] if name not in names]
    if missing:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise InputError(f"{uri} has no column {', '.join(map(repr, missing))} "
                         f"(columns: {shown or 'none'})")  # fmt: skip


def read_dataset(input_uri: str, column: str, keep: list[str],
                 num_cpus: float) -> "ray.data.Dataset":
    """The input as a Ray Data dataset of the text column and the kept columns, in order,
    read a block of about BLOCK_BYTES at a time."""
    import ray.data

    fmt = input_format(input_uri)
    filesystem, path = resolve(input_uri)
    columns = list(dict.fromkeys([column, *keep]))
    common = {"filesystem": filesystem, "num_cpus": num_cpus}
    if fmt == "parquet":
        return ray.data.read_parquet(path, columns=columns, **common)
    if fmt == "csv":
        options = csv_options(column)
        options["convert_options"].include_columns = columns
        options["read_options"] = pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False)
        return ray.data.read_csv(path, **common, **options)
    from bulk.jsonl import JsonLinesDatasource

    source = JsonLinesDatasource(path, column=column, keep=keep, filesystem=filesystem,
                                 lines_per_block=JSONL_LINES_PER_BLOCK)  # fmt: skip
    return ray.data.read_datasource(source, num_cpus=num_cpus)
