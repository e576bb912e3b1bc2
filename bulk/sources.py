"""Input files: which format a path holds, a fast check before any Ray work, the Ray Data read.

A path is a local path or any URI that `pyarrow.fs` opens (`s3://`, `gs://`, `file://`). The
format comes from the suffix: `.csv`, `.jsonl` / `.ndjson` / `.json` (JSON Lines) or `.parquet`
(a file or a directory of files).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs

if TYPE_CHECKING:
    import ray.data

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}  # fmt: skip
# A JSON Lines value that is not a string reaches the scorer as this column's description.
PROBLEM_COLUMN = "__bulk_problem"
# Lines of a JSON Lines file read to find its columns before accepting it.
JSONL_SAMPLE_LINES = 1000


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
    for number, line in enumerate(_lines(stream)):
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


def _lines(stream, chunk_size: int = 1 << 16):
    """Text lines of a binary stream, read a chunk at a time."""
    pending = b""
    while chunk := stream.read(chunk_size):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8")
    if pending:
        yield pending.decode("utf-8")


def _require_columns(names: list[str], column: str, keep: list[str], uri: str) -> None:
    missing = [name for name in [column, *keep] if name not in names]
    if missing:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise InputError(f"{uri} has no column {', '.join(map(repr, missing))} "
                         f"(columns: {shown or 'none'})")  # fmt: skip


def read_dataset(input_uri: str, column: str, keep: list[str],
                 num_cpus: float) -> "ray.data.Dataset":
    """The input as a Ray Data dataset of the text column and the kept columns, in order."""
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
        return ray.data.read_csv(path, **common, **options)
    # JSON Lines values may differ in type from line to line, which Arrow's JSON reader
    # refuses: lines are read as text and parsed here, so one odd value is one error row.
    lines = ray.data.read_text(path, drop_empty_lines=True, **common)
    return lines.map_batches(parse_json_lines, batch_format="pyarrow", batch_size=None,
                             fn_kwargs={"column": column, "keep": keep}, num_cpus=num_cpus)


def parse_json_lines(batch: pa.Table, *, column: str, keep: list[str]) -> pa.Table:
    """JSON Lines text -> the text column (strings or null), what was wrong with a value that
    is not text, and the kept columns."""
    texts: list[str | None] = []
    problems: list[str | None] = []
    kept: dict[str, list] = {name: [] for name in keep}
    for line in batch.column("text").to_pylist():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            texts.append(None)
            problems.append("line is not a JSON object")
            for values in kept.values():
                values.append(None)
            continue
        value = record.get(column)
        texts.append(value if isinstance(value, str) else None)
        problems.append(None if isinstance(value, str) else _describe(value, column in record))
        for name, values in kept.items():
            values.append(record.get(name))
    arrays = {name: _array(values) for name, values in kept.items()}
    return pa.table({**arrays, column: pa.array(texts, pa.string()),
                     PROBLEM_COLUMN: pa.array(problems, pa.string())})


def _describe(value, present: bool) -> str:
    if not present:
        return "no value"
    if value is None:
        return "null value"
    kinds = ((bool, "boolean"), ((int, float), "number"), (list, "array"), (dict, "object"))
    return "not text (" + next(name for kind, name in kinds if isinstance(value, kind)) + ")"


def _array(values: list) -> pa.Array:
    """Kept values as Arrow infers them; values of mixed kinds are kept as their JSON text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
