"""The Ray Data actor that scores batches: the service's SentimentClassifier, loaded once.

A row whose value cannot be scored (null, empty, not text) is not dropped: it comes back with
`error` set and no label, so the output has every input row exactly once.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from bulk.sources import PROBLEM_COLUMN

RESULT_COLUMNS = ("label", "score", "windows", "model_version", "error")


def probability_column(label: str) -> str:
    return f"p_{label}"


def result_schema(labels: list[str]) -> pa.Schema:
    """The scored columns, after the row number and the kept columns."""
    return pa.schema([("label", pa.string()), ("score", pa.float64()),
                      *[(probability_column(label), pa.float64()) for label in labels],
                      ("windows", pa.int32()), ("model_version", pa.string()),
                      ("error", pa.string())])  # fmt: skip


class BatchScorer:
    """`map_batches` callable class: a pyarrow batch of input rows -> the same rows scored."""

    def __init__(self, *, column: str, keep: list[str], model_dir: str | None,
                 classifier_options: dict):
        from serve_app.classifier import SentimentClassifier

        self.column = column
        self.keep = keep
        self.classifier = SentimentClassifier.load(model_dir, **classifier_options)
        self.schema = result_schema(self.classifier.labels)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts, errors = texts_and_errors(batch, self.column)
        scorable = [i for i, error in enumerate(errors) if error is None]
        predicted = self._predict([texts[i] for i in scorable], scorable, errors)
        rows: list = predicted if len(scorable) == len(texts) else [None] * len(texts)
        if rows is not predicted:
            for i, prediction in zip(scorable, predicted):
                rows[i] = prediction
        columns = {
            "label": [p and p.label for p in rows],
            "score": [p and p.score for p in rows],
            **{probability_column(label): [p and p.scores[label] for p in rows]
               for label in self.classifier.labels},
            "windows": [p and p.windows for p in rows],
            "model_version": pa.repeat(self.classifier.model_version, len(rows)),
            "error": pa.array(errors, pa.string()),
        }  # fmt: skip
        kept = batch.select(self.keep)
        for field in self.schema:
            kept = kept.append_column(field, pa.array(columns[field.name], field.type))
        return kept

    def _predict(self, texts: list[str], rows: list[int], errors: list[str | None]) -> list:
        """Predictions for the texts; should the batch fail, each text alone, so that one
        text the model cannot take is one error row (its row's error is set here)."""
        try:
            return self.classifier.predict(texts)
        except Exception:  # noqa: BLE001 - narrowed to the failing texts below
            predictions = []
            for text, row in zip(texts, rows):
                try:
                    predictions.append(self.classifier.predict([text])[0])
                except Exception as err:  # noqa: BLE001 - the row records why
                    errors[row] = f"could not be scored: {type(err).__name__}: {err}"
                    predictions.append(None)
            return predictions


def texts_and_errors(batch: pa.Table, column: str) -> tuple[list, list[str | None]]:
    """The column's values and, per row, why it cannot be scored (None when it can)."""
    values = batch.column(column)
    if _is_text(values.type) and not pa.types.is_string(values.type):
        values = values.cast(pa.string())  # dictionary-encoded text, large strings, views
    if not pa.types.is_string(values.type):
        # e.g. a Parquet column of numbers: nothing in it is text
        errors = ["null value" if value is None else f"not text ({values.type})"
                  for value in values.to_pylist()]  # fmt: skip
        return [None] * len(values), errors
    texts = values.to_pylist()
    problems = (batch.column(PROBLEM_COLUMN).to_pylist() if PROBLEM_COLUMN in batch.column_names
                else [None] * len(texts))  # fmt: skip
    blank = pc.equal(pc.utf8_trim_whitespace(values), "").to_pylist()
    errors = [problem or ("null value" if text is None else "empty text" if is_blank else None)
              for text, problem, is_blank in zip(texts, problems, blank)]  # fmt: skip
    return texts, errors


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _is_text(kind.value_type)
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind))
