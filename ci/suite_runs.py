"""What ci/bench-suite and ci/soak share: one whole-suite 'mptcp-nvme run' on the stock
or the test kernel, read back from its results.json."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = REPO / ".venv/bin/mptcp-nvme"
TOTALS = re.compile(r"^# Totals: (.*)$", re.M)
# The test kernel runs with --expect-all-features, allowing what it lacks (TLS over
# mptcp, the newer iopolicies), as CI runs it.
TEST_KERNEL_ARGS = ("--expect-all-features", "--allow-missing", "tls:mptcp",
                    "--allow-missing", "iopolicy:weighted-lat",
                    "--allow-missing", "iopolicy:adaptive")
KERNELS = ("stock", "test")
# the debug lane's kernel: the test kernel with kconfigs/debug.config (ci/mptcp-kernel --debug)
DEBUG_KERNEL_ENV = "MPTCP_NVME_DEBUG_KERNEL"


def split_extra(argv):
    """(the script's own arguments, the 'mptcp-nvme run' ones after '--'): argparse
    cannot take options after '--' into a positional."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1:]
    return argv, []


def test_kernel(prog, debug=False):
    """MPTCP_NVME_TEST_KERNEL (MPTCP_NVME_DEBUG_KERNEL), else the tree ./ci/mptcp-kernel
    (--debug) prints, built if need be."""
    tree = os.environ.get(DEBUG_KERNEL_ENV if debug else "MPTCP_NVME_TEST_KERNEL")
    if tree:
        return tree
    flags = ["--debug"] if debug else []
    done = subprocess.run([str(REPO / "ci/mptcp-kernel"), *flags], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{prog}: {' '.join(['./ci/mptcp-kernel', *flags])} failed (exit "
                 f"{done.returncode}): {done.stderr.strip().splitlines()[-1:] or ''}")
    return done.stdout.splitlines()[-1]


def kernel_args(kernel, prog):
    """'stock': none; 'test' and 'debug': that kernel, run as CI runs the test kernel."""
    if kernel == "stock":
        return ()
    return ("--kernel", test_kernel(prog, debug=kernel == "debug"), *TEST_KERNEL_ARGS)


def one_run(prog, kernel, vms, results, extra, tests=("selftests",)):
    """(wall s, results.json tests, totals line, exit code) of one run of ``tests`` (by
    default the whole suite)."""
    argv = [str(CLI), "run", "-n", vms, "--results-dir", str(results),
            *kernel_args(kernel, prog), *extra, *tests]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - started
    try:
        tests = json.loads((Path(results) / "results.json").read_text())["tests"]
    except (OSError, ValueError, KeyError):
        sys.exit(f"{prog}: {kernel} -n {vms}: no results.json (exit {done.returncode}); "
                 f"{done.stderr.strip()[-2000:]}")
    totals = TOTALS.search(done.stdout)
    return wall, tests, totals[1] if totals else "no Totals line", done.returncode
