"""The command line: `python -m bulk score INPUT OUTPUT --column text [--keep id,...]`.

Runs on a private local Ray instance by default (started and stopped with the command); on a
cluster with `--address` or RAY_ADDRESS. Ray Data's progress bars show while it runs; a
summary (rows, errors, texts/s, counts per label) ends it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from bulk.pipeline import InputError, ScoreOptions, ScoreSummary, check_input, score

REPO_ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bulk", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_score_command(commands)
    return parser


def add_score_command(commands) -> None:
    defaults = ScoreOptions()
    cmd = commands.add_parser("score", help="score a CSV, JSON Lines or Parquet file",
                              description="Score every row of INPUT into OUTPUT (Parquet or CSV).")
    cmd.add_argument("input", metavar="INPUT", help="local path or URI (s3://, gs://, file://)")
    cmd.add_argument("output", metavar="OUTPUT", help="local path or URI of the result file")
    cmd.add_argument("--column", default=defaults.column, help="the column holding the text")
    cmd.add_argument("--keep", default="", help="comma-separated input columns to copy over")
    cmd.add_argument("--format", choices=("parquet", "csv"), default=None,
                     help="output format (default: csv when OUTPUT ends in .csv, else parquet)")
    cmd.add_argument("--model-dir", default=None, help="model directory (default: the shipped one)")
    cmd.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                     help="Ray cluster to run on (default: RAY_ADDRESS, else a private local one)")
    cmd.add_argument("--batch-size", type=int, default=defaults.batch_size)
    cmd.add_argument("--min-actors", type=int, default=None,
                     help="fewest model actors (default: --max-actors on the private "
                          f"instance, which is the command's alone, else {defaults.min_actors})")
    cmd.add_argument("--max-actors", type=int, default=None,
                     help="most model actors (default: one per CPU of the private instance, "
                          f"else {defaults.max_actors})")
    cmd.add_argument("--num-cpus-per-actor", type=float, default=defaults.num_cpus_per_actor)
    cmd.add_argument("--num-gpus-per-actor", type=float, default=defaults.num_gpus_per_actor,
                     help="GPU per actor; a fraction (0.25) shares one GPU between actors")
    cmd.add_argument("--backend", choices=("torch", "onnx"), default=None,
                     help="what runs the network (default: as the service, ONNX Runtime on "
                          "CPU, torch on GPU)")
    cmd.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                     help="int8 weights on ONNX Runtime (default: as the service, int8 for the "
                          "shipped model on x86 CPUs with VNNI)")
    cmd.add_argument("--num-cpus", type=int, default=None,
                     help="CPUs of the private local instance (default: all available)")
    cmd.add_argument("--json", action="store_true", help="print the summary as JSON")


def options_from(args: argparse.Namespace, cpus: int | None) -> ScoreOptions:
    output_format = args.format or ("csv" if args.output.lower().endswith(".csv") else "parquet")
    max_actors = args.max_actors or (cpus if cpus else ScoreOptions().max_actors)
    return ScoreOptions(
        column=args.column, keep=[name.strip() for name in args.keep.split(",") if name.strip()],
        output_format=output_format, model_dir=args.model_dir, batch_size=args.batch_size,
        min_actors=min(args.min_actors or (max_actors if cpus else ScoreOptions().min_actors),
                       max_actors),
        max_actors=max_actors,
        num_cpus_per_actor=args.num_cpus_per_actor, num_gpus_per_actor=args.num_gpus_per_actor,
        classifier_options={"backend": args.backend, "int8": args.int8},
    )  # fmt: skip


def start_ray(address: str | None, num_cpus: int | None) -> int | None:
    """Connect to `address`, or start a private local instance; its CPU count when private."""
    # Ray 2.60 asks for token auth on local instances; the models never download.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import ray

    if address and address != "local":
        ray.init(address=address)
        return None
    # The model actors import this checkout: the private instance's workers inherit the path.
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    cpus = num_cpus or len(os.sched_getaffinity(0))
    ray.init(address="local", num_cpus=cpus, include_dashboard=False)
    return cpus


def print_summary(summary: ScoreSummary, output: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"output": output, **summary.__dict__}))
        return
    labels = ", ".join(f"{label} {count:,}" for label, count in summary.label_counts.items())
    print(f"\nscored {summary.rows:,} rows in {summary.seconds:.1f} s "
          f"({summary.texts_per_s:,.1f} texts/s) -> {output}\n"
          f"errors: {summary.errors:,}\nlabels: {labels or 'none'}\n"
          f"model: {summary.model_version}")  # fmt: skip


def _exit(signum, _frame) -> None:
    # SystemExit unwinds like Ctrl-C: the result's temporary file is removed and the private
    # Ray instance (its raylet, GCS and actors) is shut down at exit.
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit)
    try:
        options = options_from(args, None)
        check_input(args.input, options.column, options.keep)  # before Ray starts
        cpus = start_ray(args.address, args.num_cpus)
        summary = score(args.input, args.output, options_from(args, cpus))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print_summary(summary, args.output, args.json)
