""".github/workflows/selftests.yml: valid for actionlint, and the shape CI bots rely on
(the kernel built once, shards as a matrix, one merge job)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests import REPO

WORKFLOW = REPO / ".github/workflows/selftests.yml"


def actionlint():
    """The actionlint binary of the test extra (next to this Python), else on PATH."""
    local = Path(sys.executable).parent / "actionlint"
    return str(local) if local.is_file() else shutil.which("actionlint")


def test_actionlint_passes():
    binary = actionlint()
    if binary is None:
        pytest.skip("actionlint not installed (pip install -e '.[test]')")
    try:
        done = subprocess.run([binary, "-no-color", str(WORKFLOW)], capture_output=True,
                              text=True, timeout=120, cwd=REPO)
    except OSError as err:
        pytest.skip(f"actionlint cannot run here: {err}")
    assert done.returncode == 0, done.stdout + done.stderr


def test_shards_and_merge():
    text = WORKFLOW.read_text()
    assert "SHARD: ${{ matrix.shard }}/${{ strategy.job-total }}" in text
    assert '--shard "$SHARD"' in text and "--time-budget" in text
    assert "needs: kernel" in text and "needs: shards" in text
    assert ".venv/bin/mptcp-nvme merge merged/results-shard-*" in text
