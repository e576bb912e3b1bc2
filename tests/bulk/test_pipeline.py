"""The bulk pipeline on a real local Ray instance (Ray Data, the real classifier, real files).

One private Ray instance serves the whole module (started in this process with
`ray.init(address="local")`, shut down at the end); each test scores small files with the
shipped model and reads the output back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from bulk.pipeline import InputError, ScoreOptions, score

pytestmark = pytest.mark.ray

REPO_ROOT = Path(__file__).resolve().parents[2]
POSITIVE = "I love it, wonderful quality and it works perfectly. Delighted!"
NEGATIVE = "Terrible. It broke on the first day, the worst purchase I have ever made."
NEUTRAL = "The package contains a cable and a manual."
# Far past the model's 128-token window: classified over several windows.
LONG = " ".join([NEGATIVE, NEUTRAL, POSITIVE] * 40)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    assert not ray.is_initialized(), "another test left this process connected to Ray"
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "PYTHONPATH")}
    os.environ["RAY_AUTH_MODE"] = "token"
    # The model actors import this checkout: the instance's workers inherit the path.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), saved["PYTHONPATH"]]))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def options(**overrides) -> ScoreOptions:
    return ScoreOptions(**{"min_actors": 1, "max_actors": 1, **overrides})


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines))  # fmt: skip
    return path


# ---- formats in and out, and the same answers as the service's classifier ------------------


def test_csv_to_parquet_gives_the_service_classifiers_answers_in_input_order(
        local_ray, classifier, tmp_path):
    texts = [POSITIVE, NEGATIVE, NEUTRAL, LONG, "12345", "Line one,\nline two: \"fine\"."] * 5
    ids = [f"r{i}" for i in range(len(texts))]
    pacsv.write_csv(pa.table({"id": ids, "text": texts, "other": [1] * len(texts)}),
                    tmp_path / "in.csv")  # fmt: skip

    summary = score(str(tmp_path / "in.csv"), str(tmp_path / "out.parquet"),
                    options(keep=["id"], batch_size=8))  # fmt: skip

    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column_names == ["row", "id", "label", "score", "p_negative", "p_neutral",
                                "p_positive", "windows", "model_version", "error"]
    assert out.column("row").to_pylist() == list(range(len(texts)))
    assert out.column("id").to_pylist() == ids
    expected = classifier.predict(texts)
    rows = out.to_pylist()
    for row, prediction in zip(rows, expected):
        assert row["label"] == prediction.label
        assert row["windows"] == prediction.windows
        assert row["model_version"] == prediction.model_version
        for label, probability in prediction.scores.items():
            assert row[f"p_{label}"] == pytest.approx(probability, abs=1e-4)
        assert row["error"] is None
    assert rows[3]["windows"] > 1  # the long text, read whole over its windows
    assert summary.rows == len(texts) and summary.errors == 0
    assert summary.label_counts == {label: sum(p.label == label for p in expected)
                                    for label in classifier.labels}  # fmt: skip
    assert summary.model_version == classifier.model_version
    assert not list(tmp_path.glob(".*partial"))


def test_jsonl_to_csv_turns_bad_values_into_counted_error_rows(local_ray, tmp_path):
    lines = [
        {"id": 1, "text": POSITIVE},
        {"id": 2, "text": None},
        {"id": 3, "text": 42},
        {"id": 4, "text": {"nested": "object"}},
        {"id": 5},
        {"id": 6, "text": ""},
        {"id": 7, "text": "   "},
        "this line is not JSON",
        {"id": 9, "text": NEGATIVE},
    ]
    write_jsonl(tmp_path / "in.jsonl", lines)

    summary = score(str(tmp_path / "in.jsonl"), str(tmp_path / "out.csv"),
                    options(keep=["id"], output_format="csv"))  # fmt: skip

    # CSV writes null as an empty field
    nulls = pacsv.ConvertOptions(strings_can_be_null=True)
    out = pacsv.read_csv(tmp_path / "out.csv", convert_options=nulls).to_pylist()
    assert [row["row"] for row in out] == list(range(len(lines)))
    assert [row["id"] for row in out] == [1, 2, 3, 4, 5, 6, 7, None, 9]
    assert [row["error"] for row in out] == [
        None, "null value", "not text (number)", "not text (object)", "no value",
        "empty text", "empty text", "line is not a JSON object", None,
    ]  # fmt: skip
    assert [row["label"] for row in out] == ["positive", *[None] * 7, "negative"]
    assert all(row["model_version"] for row in out)
    assert (summary.rows, summary.errors) == (9, 7)
    assert summary.label_counts == {"negative": 1, "neutral": 0, "positive": 1}


def test_parquet_in_keeps_columns_and_refuses_non_text_values_row_by_row(local_ray, tmp_path):
    table = pa.table({"text": pa.array([POSITIVE, None, NEUTRAL]), "score_id": [10, 11, 12],
                      "when": pa.array(["a", "b", "c"])})  # fmt: skip
    pq.write_table(table, tmp_path / "in.parquet")
    numbers = pa.table({"text": pa.array([1, None, 3], pa.int64())})
    pq.write_table(numbers, tmp_path / "numbers.parquet")

    summary = score(str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"),
                    options(keep=["score_id", "when"]))  # fmt: skip
    numbers_summary = score(str(tmp_path / "numbers.parquet"), str(tmp_path / "n.parquet"),
                            options())  # fmt: skip

    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.field("score_id").type == pa.int64()  # kept with its own type
    assert out.column("when").to_pylist() == ["a", "b", "c"]
    assert out.column("error").to_pylist() == [None, "null value", None]
    assert summary.errors == 1
    errors = pq.read_table(tmp_path / "n.parquet").column("error").to_pylist()
    assert errors == ["not text (int64)", "null value", "not text (int64)"]
    assert (numbers_summary.rows, numbers_summary.errors) == (3, 3)


# ---- input checked before any Ray work --------------------------------------------------


def test_a_missing_column_is_an_input_error_naming_it(tmp_path):
    # No Ray instance: the check comes before any Ray work.
    pacsv.write_csv(pa.table({"id": [1], "body": ["x"]}), tmp_path / "in.csv")
    with pytest.raises(InputError, match=r"no column 'text' \(columns: id, body\)"):
        score(str(tmp_path / "in.csv"), str(tmp_path / "out.parquet"), options())
    with pytest.raises(InputError, match="no column 'nope'"):
        score(str(tmp_path / "in.csv"), str(tmp_path / "out.parquet"),
              options(column="body", keep=["nope"]))  # fmt: skip
    assert not (tmp_path / "out.parquet").exists()


# ---- failures: a killed actor, a stopped run ----------------------------------------------


def test_a_killed_actor_is_replaced_and_every_row_comes_out_once(local_ray, tmp_path):
    count = 2100  # JSON Lines are read 1,024 lines a block: three blocks
    texts = [f"{[POSITIVE, NEGATIVE, NEUTRAL][i % 3]} (#{i})" for i in range(count)]
    write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": text} for i, text in enumerate(texts)])
    killed: list[int] = []

    def kill_an_actor(rows_done: int, errors: int, labels: dict) -> None:
        if killed or not 0 < rows_done < count:
            return
        actors = [p for p in psutil.Process().children(recursive=True)
                  if "BatchScorer" in " ".join(p.cmdline())]  # fmt: skip
        assert actors, "no model actor found under this process's Ray instance"
        actors[0].send_signal(signal.SIGKILL)
        killed.append(actors[0].pid)

    summary = score(str(tmp_path / "in.jsonl"), str(tmp_path / "out.parquet"),
                    options(keep=["id"], max_actors=2, batch_size=32), on_progress=kill_an_actor)

    assert killed, "the run ended before an actor could be killed"
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("id").to_pylist() == list(range(count))  # each row once, in order
    assert out.column("row").to_pylist() == list(range(count))
    assert summary.rows == count and summary.errors == 0
    assert out.column("label").null_count == 0


def test_a_run_stopped_before_its_end_publishes_nothing(local_ray, tmp_path):
    # Stopped at the first progress report: after rows were written, before the file is done.
    count = 300
    pq.write_table(pa.table({"text": [f"{POSITIVE} {i}" for i in range(count)]}),
                   tmp_path / "in.parquet")  # fmt: skip
    (tmp_path / "out").mkdir()

    class Stop(Exception):
        pass

    def stop(rows_done: int, errors: int, labels: dict) -> None:
        if rows_done:
            raise Stop

    with pytest.raises(Stop):
        score(str(tmp_path / "in.parquet"), str(tmp_path / "out" / "scored.parquet"),
              options(batch_size=16), on_progress=stop)  # fmt: skip
    assert list((tmp_path / "out").iterdir()) == []  # neither the result nor a partial file


# ---- the command ---------------------------------------------------------------------------


def run_command(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    return subprocess.run([sys.executable, "-m", "bulk", "score", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_the_command_refuses_a_missing_column_before_starting_ray(tmp_path):
    pacsv.write_csv(pa.table({"id": [1], "body": ["x"]}), tmp_path / "in.csv")
    done = run_command(str(tmp_path / "in.csv"), str(tmp_path / "out.parquet"))
    assert done.returncode == 2
    assert "error: " in done.stderr and "no column 'text'" in done.stderr
    assert "Started a local Ray instance" not in done.stderr


def test_the_command_scores_a_file_on_a_cluster_and_prints_a_summary(local_ray, tmp_path):
    pacsv.write_csv(pa.table({"id": [1, 2, 3], "review": [POSITIVE, "", NEGATIVE]}),
                    tmp_path / "in.csv")  # fmt: skip
    address = local_ray.get_runtime_context().gcs_address
    done = run_command(str(tmp_path / "in.csv"), str(tmp_path / "out.csv"), "--column", "review",
                       "--keep", "id", "--address", address, "--max-actors", "1", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["rows"], summary["errors"]) == (3, 1)
    assert summary["label_counts"] == {"negative": 1, "neutral": 0, "positive": 1}
    out = pacsv.read_csv(tmp_path / "out.csv")  # the format follows OUTPUT's name
    assert out.column("id").to_pylist() == [1, 2, 3]
    assert out.column("label").to_pylist()[::2] == ["positive", "negative"]
