"""Host tools: the environment they run in, and one clear error when one is missing."""

import os
import shutil
import sys
from pathlib import Path

from mptcp_nvme.errors import SetupError


def tool_env():
    """os.environ with this interpreter's bin directory first on PATH: vng runs
    virtme-run from PATH, and both live in the venv."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def require(tools, hint):
    """SetupError naming every tool of ``tools`` that is not on the tool PATH."""
    path = tool_env()["PATH"]
    missing = [tool for tool in tools if not shutil.which(tool, path=path)]
    if missing:
        raise SetupError(f"missing host tool(s): {', '.join(missing)} ({hint})")
