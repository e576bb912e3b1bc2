"""Serving carries no training code: the web app and the Serve app build without `training`."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import sys
import {module}
loaded = sorted(m for m in sys.modules if m == "training" or m.startswith("training."))
print(",".join(loaded))
"""


def _training_modules_loaded_by(module: str) -> list[str]:
    # A fresh interpreter: this test process may already hold `training` from other tests.
    result = subprocess.run([sys.executable, "-c", CHECK.format(module=module)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300, check=True)
    return [name for name in result.stdout.strip().split(",") if name]


def test_the_web_app_and_its_classifier_import_nothing_of_training():
    assert _training_modules_loaded_by("serve_app.app, serve_app.classifier") == []


def test_the_serve_application_imports_nothing_of_training():
    assert _training_modules_loaded_by("deployments.app, deployments.sentiment") == []


def test_the_check_sees_training_when_it_is_imported():
    assert "training.cli" in _training_modules_loaded_by("training.cli")
