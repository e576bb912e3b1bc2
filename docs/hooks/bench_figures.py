"""MkDocs hook: the performance page's figures come from the bench JSON files at build time.

A page writes `{{ results.throughput_ratio_c32 }}` (a file in bench/ and a dotted path into
it, list items by index), optionally with a Python format spec (`{{ load.served_share:.1% }}`),
or, alone on a line, `{{ table steps }}` for one of the tables below. So the site always shows what `make bench`,
`make load` and the other benchmarks last wrote, and a figure that disappears from a file
fails the build instead of going stale.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

FILES = ("results", "load", "tracing_cost", "overload")
FIGURE = re.compile(r"\{\{\s*(\w+)\.([\w.]+?)\s*(?::([^}\s]+))?\s*\}\}")
TABLE = re.compile(r"^\{\{\s*table\s+(\w+)\s*\}\}$", re.MULTILINE)


def number(value, spec: str | None = None) -> str:
    if spec:
        return format(value, spec)
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        value = int(value)
    return f"{value:,}" if isinstance(value, int | float) else str(value)


def lookup(figures: dict, name: str, path: str):
    value = figures.get(name)
    for key in path.split("."):
        if isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            raise PluginError(f"bench/{name}.json has no {path!r} (asked for by the docs)")
    return value


def row(cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(header, rows) -> str:
    return "\n".join([row(header), row(["---"] * len(header)), *(row(r) for r in rows)])


def step_cells(step: dict) -> list:
    return [step["server"], f"`{step['route']}`", step["concurrency"], number(step["rps"]),
            number(step["sentences_per_s"]), number(step["p50_ms"]), number(step["p95_ms"]),
            number(step["p99_ms"]), step["errors"], step["shed"]]


def steps_table(figures: dict) -> str:
    results = figures["results"]
    steps = [*results["baseline"], *results["ours"], results["cache"], results["logging_off"],
             results["default_max_ongoing"]]
    return table(["server", "route", "clients", "req/s", "texts/s", "p50 ms", "p95 ms",
                  "p99 ms", "errors", "shed"], [step_cells(step) for step in steps])


def fast_model_table(figures: dict) -> str:
    fast = figures["results"]["fast_model"]
    pairs = zip(fast["baseline"], fast["ours"], strict=True)
    rows = []
    for naive, ours in pairs:
        rows.append([f"`{ours['route']}`", ours["concurrency"],
                     f"{number(naive['sentences_per_s'])} / {number(ours['sentences_per_s'])}",
                     f"{number(naive['p50_ms'])} / {number(ours['p50_ms'])}",
                     f"{number(naive['p99_ms'])} / {number(ours['p99_ms'])}",
                     f"{number(naive['cpu_ms_per_request']['total'])} / "
                     f"{number(ours['cpu_ms_per_request']['total'])}"])
    return table(["route", "clients", "texts/s naive / ours", "p50 ms naive / ours",
                  "p99 ms naive / ours", "core-ms per request naive / ours"], rows)


def cpu_table(figures: dict) -> str:
    [step] = [s for s in figures["results"]["fast_model"]["ours"]
              if s["route"] == "/predict" and s["concurrency"] == 32]
    account = step["cpu_ms_per_request"]
    return table(["process", "core-ms per request"],
                 [[name, number(ms)] for name, ms in account.items()])


def tracing_table(figures: dict) -> str:
    rows = []
    for step in figures["tracing_cost"]["summary"]:
        off, on = step["off"], step["on"]
        rows.append([f"`{step['route']}`", step["concurrency"],
                     f"{number(off['rps'])}, {number(off['p50_ms'])}, {number(off['cpu_ms_total'])}",
                     f"{number(on['rps'])}, {number(on['p50_ms'])}, {number(on['cpu_ms_total'])}",
                     number(step["rps_on_vs_off"])])
    return table(["route", "clients", "off: req/s, p50 ms, core-ms", "always on: req/s, p50 ms, "
                  "core-ms", "on / off req/s"], rows)


def load_table(figures: dict) -> str:
    rows = [[f"`{name}`", number(step["requests"]), step["failures"], number(step["shed"]),
             number(step["p50_ms"]), number(step["p99_ms"]),
             "-" if step["p99_shed_ms"] is None else number(step["p99_shed_ms"])]
            for name, step in figures["load"]["by_request"].items()]
    return table(["step", "answers", "failures", "refused and retried", "p50 ms served",
                  "p99 ms served", "p99 ms refusals"], rows)


TABLES = {"steps": steps_table, "fast_model": fast_model_table, "cpu": cpu_table,
          "tracing": tracing_table, "load": load_table}


def render(markdown: str, bench_dir: Path) -> str:
    figures = {name: json.loads((bench_dir / f"{name}.json").read_text()) for name in FILES}

    def one_table(match: re.Match) -> str:
        if match[1] not in TABLES:
            raise PluginError(f"no bench table named {match[1]!r}")
        return TABLES[match[1]](figures)

    markdown = TABLE.sub(one_table, markdown)
    return FIGURE.sub(lambda m: number(lookup(figures, m[1], m[2]), m[3]), markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "{{" not in markdown:
        return markdown
    return render(markdown, Path(config.config_file_path).resolve().parent / "bench")
