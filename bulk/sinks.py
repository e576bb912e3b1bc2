"""The output file: Parquet or CSV, written as batches arrive, published only when complete.

Batches are written to a hidden temporary name beside the target on the same filesystem and
moved onto the target name at the end (a rename on a local disk), so a reader of the target
name never sees a half-written file. A failed run removes its temporary file.
"""

from __future__ import annotations

import posixpath
import uuid

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bulk.sources import InputError, resolve

OUTPUT_FORMATS = ("parquet", "csv")
# Rows per Parquet row group: large enough to compress well, small enough to stay in memory.
ROW_GROUP_ROWS = 65_536


class ResultWriter:
    def __init__(self, output_uri: str, output_format: str):
        if output_format not in OUTPUT_FORMATS:
            raise InputError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, "
                             f"not {output_format!r}")  # fmt: skip
        self.output_uri = output_uri
        self.format = output_format
        self.filesystem, self.path = resolve(output_uri)
        directory, name = posixpath.split(self.path)
        self.temporary_path = posixpath.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.partial")
        if directory:
            self.filesystem.create_dir(directory, recursive=True)
        self._stream = None
        self._writer = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    @property
    def schema(self) -> pa.Schema | None:
        return self._schema if self._writer is not None else None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._open(table.schema)
        elif table.schema != self._schema:
            # Readers infer a kept column's type per block; hold every block to the first.
            table = table.cast(self._schema)
        if self.format == "csv":
            self._writer.write_table(table)
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def publish(self, empty_schema: pa.Schema) -> None:
        """Finish the file and move it onto the target name; `empty_schema` is the file's
        schema if no batch came (an input without rows)."""
        if self._writer is None:
            self._open(empty_schema)
        self._flush()
        self._writer.close()
        self._stream.close()
        self.filesystem.move(self.temporary_path, self.path)

    def discard(self) -> None:
        """Drop the temporary file (a failed or cancelled run)."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self._stream is not None:
                self._stream.close()
        finally:
            if self.filesystem.get_file_info(self.temporary_path).type != pafs.FileType.NotFound:
                self.filesystem.delete_file(self.temporary_path)

    def _open(self, schema: pa.Schema) -> None:
        self._schema = schema  # pyarrow's CSVWriter, unlike ParquetWriter, does not keep it
        self._stream = self.filesystem.open_output_stream(self.temporary_path)
        if self.format == "csv":
            self._writer = pacsv.CSVWriter(self._stream, schema)
        else:
            self._writer = pq.ParquetWriter(self._stream, schema, compression="zstd")

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=ROW_GROUP_ROWS)
            self._pending, self._pending_rows = [], 0
