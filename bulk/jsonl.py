"""JSON Lines for Ray Data, streamed a chunk of lines at a time, one odd value one error row.

Arrow's JSON reader refuses a column whose type changes from line to line (a number where
text was), and Ray's line-delimited reader reads a whole file into memory; this reads lines
as they come and keeps what was wrong with a value that is not text in PROBLEM_COLUMN.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

from bulk.sources import PROBLEM_COLUMN, lines


class JsonLinesDatasource(FileBasedDatasource):
    _FILE_EXTENSIONS = ["jsonl", "ndjson", "json"]

    def __init__(self, paths, *, column: str, keep: list[str], lines_per_block: int, **kwargs):
        super().__init__(paths, **kwargs)
        self.column = column
        self.keep = keep
        self.lines_per_block = lines_per_block

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        block: list[str] = []
        for line in lines(f):
            if line.strip():
                block.append(line)
            if len(block) >= self.lines_per_block:
                yield parse_json_lines(block, self.column, self.keep)
                block = []
        if block:
            yield parse_json_lines(block, self.column, self.keep)


def parse_json_lines(block: list[str], column: str, keep: list[str]) -> pa.Table:
    """Lines -> the text column (strings or null), what was wrong with each value that is not
    text, and the kept columns."""
    texts: list[str | None] = []
    problems: list[str | None] = []
    kept: dict[str, list] = {name: [] for name in keep}
    for line in block:
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
        problems.append(None if isinstance(value, str) else describe(value, column in record))
        for name, values in kept.items():
            values.append(record.get(name))
    arrays = {name: _array(values) for name, values in kept.items()}
    return pa.table({**arrays, column: pa.array(texts, pa.string()),
                     PROBLEM_COLUMN: pa.array(problems, pa.string())})  # fmt: skip


def describe(value, present: bool) -> str:
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
