"""The shared Ray Serve instances, as a pytest plugin registered for the whole suite.

Registered in `tests/conftest.py` (`pytest_plugins`) rather than defined in
`tests/integration/conftest.py`, so that every test directory (integration, web) gets the
same session instance: one cluster per run, not one per directory. See `conftest.py` here
for what each fixture gives.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_stack import BackendUnavailable, ServeInstance, check_mysql  # noqa: E402
from serve_stack import start_serve as _start_serve  # noqa: E402

IN_CI = bool(os.environ.get("CI"))


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: this backend is required)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def start_serve() -> Callable:
    return _start_serve


@pytest.fixture(scope="session")
def serve_instance() -> Iterator[ServeInstance]:
    # A third CPU beyond the model's two replicas (max_replicas 2), which earlier tests may
    # have scaled up: a bulk job's scoring actor must still find room on the shared cluster.
    with _start_serve(database="sqlite", num_cpus=3) as instance:
        yield instance


@pytest.fixture(scope="session")
def mysql_serve_instance() -> Iterator[ServeInstance]:
    try:
        check_mysql()
    except BackendUnavailable as exc:
        _unavailable(str(exc))
    with _start_serve(database="mysql", num_cpus=3) as instance:
        yield instance
