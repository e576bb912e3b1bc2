"""The documentation site builds with `mkdocs build --strict`, so a broken link, a missing
anchor or a page left out of the nav fails the suite; its performance page shows the figures
of the bench JSON files; the README stays short and its links lead to pages that exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH_FILES = ("results", "load", "tracing_cost", "overload")


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    built = mkdocs_build(ROOT, site)
    assert built.returncode == 0, built.stdout + built.stderr
    return site


def page_text(site: Path, name: str) -> str:
    page = (site / name / "index.html").read_text(encoding="utf-8")
    return re.sub(r"<[^>]+>", "", page)


def test_the_site_builds_strict_with_every_nav_page(site):
    config = (ROOT / "mkdocs.yml").read_text()
    for page in re.findall(r":\s*([\w-]+\.md)\s*$", config, flags=re.MULTILINE):
        assert (ROOT / "docs" / page).is_file(), f"mkdocs.yml names docs/{page}"
        built = site / ("" if page == "index.md" else page.removesuffix(".md")) / "index.html"
        assert built.is_file(), built


def test_a_broken_link_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "bench").mkdir()
    for name in BENCH_FILES:
        shutil.copy(ROOT / "bench" / f"{name}.json", copy / "bench")
    (copy / "models" / "default").mkdir(parents=True)
    shutil.copy(ROOT / "models/default/README.md", copy / "models/default/README.md")
    assert mkdocs_build(copy, tmp_path / "ok").returncode == 0, "the copy builds as it is"

    with (copy / "docs" / "api.md").open("a") as page:
        page.write("\nSee [the missing page](no-such-page.md).\n")
    built = mkdocs_build(copy, tmp_path / "broken")
    assert built.returncode != 0
    assert "no-such-page.md" in built.stdout + built.stderr


def test_the_performance_page_shows_the_bench_files_figures(site):
    text = page_text(site, "performance")
    assert "{{" not in text, "every bench placeholder was filled"
    results = json.loads((ROOT / "bench/results.json").read_text())
    load = json.loads((ROOT / "bench/load.json").read_text())
    tracing = json.loads((ROOT / "bench/tracing_cost.json").read_text())
    overload = json.loads((ROOT / "bench/overload.json").read_text())
    for figure in (results["throughput_ratio_c32"], results["p99_ratio_c32"],
                   results["batch_vs_raw_ratio"], results["fast_model"]["throughput_ratio_c32"],
                   tracing["summary"][0]["rps_on_vs_off"]):
        assert str(figure) in text, figure
    assert f"{load['requests']:,}" in text
    assert f"{overload['statuses']['503']:,}" in text
    for step in results["ours"]:
        assert f"{step['rps']:,}" in text, step
    for command in ("make bench", "make load", "bench.overload", "bench.tracing_cost"):
        assert command in text


def test_the_readme_is_short_and_its_links_lead_to_pages(site):
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\((docs/[\w./-]+\.md)\)", readme)
    assert len(links) >= 10, "the README sends readers to the site"
    for link in links:
        assert (ROOT / link).is_file(), link
