"""The suite's guard (tests/conftest.py): without Fashion-MNIST the tests fail with the fix, never skip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# pytest in a fresh process whose dataset folder is somewhere empty.
RUN_WITHOUT_DATA = (
    "import sys, pytest, ganray.data.fashion as f; f.DEFAULT_DIR = sys.argv[1]; "
    "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', sys.argv[2]]))"
)


def test_missing_fashion_mnist_fails_every_test_with_the_fix(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_DATA, str(tmp_path / "absent"), str(TESTS / "test_losses.py")],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # pytest's "tests failed"
    assert "run `make setup`" in out and str(tmp_path / "absent") in out
    assert "passed" not in out and "skipped" not in out
