"""Score a file of texts on Ray Data: read (streaming) -> actor pool of SentimentClassifier ->
one Parquet or CSV file, published only when complete.

    ray.init(...)
    summary = score("reviews.csv", "scored.parquet", ScoreOptions(column="text", keep=["id"]))

The read and the actors run as Ray Data's streaming execution, with its backpressure: memory
holds a bounded number of blocks whatever the size of the input. The driver takes the scored
blocks in input order, numbers the rows, counts labels and appends to the output file.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bulk.scorer import result_schema
from bulk.sinks import ResultWriter
from bulk.sources import BLOCK_BYTES, InputError, check_input, read_dataset

__all__ = ["InputError", "ScoreOptions", "ScoreSummary", "check_input", "score"]

ROW_COLUMN = "row"
# The shipped model (serve_app.classifier.DEFAULT_MODEL_DIR, named here to keep torch out).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
# The most object store memory a run's blocks may take (about 2,000 blocks of BLOCK_BYTES).
OBJECT_STORE_BYTES = 256 * 1024 * 1024
# The driver reports progress at most this often.
PROGRESS_INTERVAL_S = 1.0


@dataclass
class ScoreOptions:
    column: str = "text"
    keep: list[str] = field(default_factory=list)
    output_format: str = "parquet"  # "parquet" | "csv"
    model_dir: str | None = None  # None: the shipped model (models/default)
    batch_size: int = 64  # rows per call of an actor
    min_actors: int = 1
    max_actors: int = 2  # the pool autoscales between min_actors and max_actors
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0  # a fraction shares a GPU between actors
    # CPUs reserved per read task. Reading is light next to the model, and a read that
    # reserves any CPU cannot start while the actors hold every CPU: the run would wait forever.
    num_cpus_per_read: float = 0.0
    # SentimentClassifier.load's keywords (long_text, max_length, ...); long_text defaults
    # to the service's LONG_TEXT setting.
    classifier_options: dict = field(default_factory=dict)


@dataclass
class ScoreSummary:
    rows: int
    errors: int
    label_counts: dict[str, int]
    seconds: float
    texts_per_s: float
    model_version: str


Progress = Callable[[int, int, dict[str, int]], None]


def score(input_uri: str, output_uri: str, options: ScoreOptions,
          on_progress: Progress | None = None) -> ScoreSummary:
    """Score every row of `input_uri` into `output_uri` inside an initialised Ray.

    on_progress(rows_done, errors, label_counts) is called from this thread about every
    second while rows arrive, and once at the end. Raises InputError before any Ray work
    when the input cannot be read as asked.
    """
    started = time.perf_counter()
    check_input(input_uri, options.column, options.keep)
    labels = model_labels(options.model_dir)
    _check_kept_names(options.keep, labels)
    writer = ResultWriter(output_uri, options.output_format)
    scored = _scored_dataset(input_uri, options)
    counts = _Counts(labels)
    blocks = iter(scored.iter_batches(batch_size=None, batch_format="pyarrow"))
    try:
        for block in blocks:
            writer.write(_numbered(block, counts.rows))
            counts.add(block)
            if on_progress and counts.due():
                on_progress(counts.rows, counts.errors, dict(counts.labels))
        writer.publish(_empty_schema(options.keep, labels))
    except BaseException:
        writer.discard()
        raise
    finally:
        # A run stopped early (an error, a cancel from on_progress) stops its actors now,
        # not whenever the iterator is collected.
        getattr(blocks, "close", lambda: None)()
    if on_progress:
        on_progress(counts.rows, counts.errors, dict(counts.labels))
    seconds = time.perf_counter() - started
    return ScoreSummary(rows=counts.rows, errors=counts.errors, label_counts=dict(counts.labels),
                        seconds=round(seconds, 3), texts_per_s=round(counts.rows / seconds, 1),
                        model_version=counts.model_version)  # fmt: skip


def _scored_dataset(input_uri: str, options: ScoreOptions):
    """Read -> map_batches(BatchScorer) on an actor pool, built under a context of its own:
    small blocks, and blocks kept in input order (row numbers follow the input)."""
    import ray.data

    from bulk.scorer import BatchScorer

    context = ray.data.DataContext.get_current().copy()
    context.target_max_block_size = BLOCK_BYTES
    context.execution_options.preserve_order = True
    # Reads run ahead of the actors only this far: the blocks in memory are bounded by this,
    # not by the input's size (by default the budget is a share of the whole object store).
    context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
        object_store_memory=OBJECT_STORE_BYTES)
    with ray.data.DataContext.current(context):
        dataset = read_dataset(input_uri, options.column, options.keep, options.num_cpus_per_read)
        return dataset.map_batches(
            BatchScorer,
            fn_constructor_kwargs={"column": options.column, "keep": options.keep,
                                   "model_dir": options.model_dir,
                                   "classifier_options": _classifier_options(options)},
            batch_size=options.batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=options.min_actors,
                                               max_size=options.max_actors),
            num_cpus=options.num_cpus_per_actor, num_gpus=options.num_gpus_per_actor or None,
        )  # fmt: skip


def model_labels(model_dir: str | None) -> list[str]:
    """The model's labels from its directory's config, read without loading the model (the
    driver stays free of torch)."""
    path = DEFAULT_MODEL_DIR if model_dir in (None, "default") else Path(model_dir)
    if (path / "layers.json").is_file():
        return list(json.loads((path / "layers.json").read_text())["labels"])
    try:
        id2label = json.loads((path / "config.json").read_text())["id2label"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path} is not a model directory: {err}") from err
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def _check_kept_names(keep: list[str], labels: list[str]) -> None:
    taken = {ROW_COLUMN, *result_schema(labels).names}
    clash = [name for name in keep if name in taken]
    if clash:
        raise InputError(f"cannot keep {', '.join(map(repr, clash))}: the output has a column "
                         "of that name")  # fmt: skip


def _classifier_options(options: ScoreOptions) -> dict:
    if "long_text" in options.classifier_options:
        return options.classifier_options
    from serve_app.settings import get_settings

    return {**options.classifier_options, "long_text": get_settings().long_text}


def _numbered(block: pa.Table, first_row: int) -> pa.Table:
    rows = pa.array(range(first_row, first_row + block.num_rows), pa.int64())
    return block.add_column(0, ROW_COLUMN, rows)


def _empty_schema(keep: list[str], labels: list[str]) -> pa.Schema:
    """The output's schema for an input without rows."""
    kept = [pa.field(name, pa.string()) for name in keep]
    return pa.schema([pa.field(ROW_COLUMN, pa.int64()), *kept, *result_schema(labels)])


class _Counts:
    def __init__(self, labels: list[str]):
        self.rows = 0
        self.errors = 0
        self.labels: Counter[str] = Counter(dict.fromkeys(labels, 0))
        self.model_version = ""
        self._reported = float("-inf")  # the first block is reported at once

    def add(self, block: pa.Table) -> None:
        self.rows += block.num_rows
        self.errors += block.num_rows - pc.count(block.column("error"), mode="only_null").as_py()
        for item in pc.value_counts(block.column("label").drop_null()).to_pylist():
            self.labels[item["values"]] += item["counts"]
        if not self.model_version and block.num_rows:
            self.model_version = block.column("model_version")[0].as_py()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._reported < PROGRESS_INTERVAL_S:
            return False
        self._reported = now
        return True
