"""What the host and the guest agree on: the agent's channel, the names of the
properties that test reports carry from the guest to the host's reporters, and where
results and a test's artifacts are written."""

import re
from pathlib import Path

MARK = "@@mptcp-nvme@@ "
# The agent's channel: fds the guest shell dups from the command's stdin and stdout
# before pytest's capture takes fds 0-2 over (fd 1 then goes to stderr).
REQUEST_FD, REPLY_FD = 3, 4
# Mount points of the shared folders in the guest (vng needs them to exist in the root).
GUEST_SOURCE_DIR = "/mnt/src"
GUEST_RESULTS_DIR = "/mnt/results"
GUEST_CONFIG_NAME = "guest-config.json"     # options.guest_config(), in the results folder
KSELFTEST_DIR = "kselftest"   # the tree's installed kselftests, in the (VM's) results folder
BLKTESTS_DIR = "blktests"     # a user's blktests checkout, copied into the (VM's) results folder
BLKTESTS_TOOLS = "/usr/local/libexec/mptcp-nvme"   # the rootfs' tools only blktests has on PATH
KMEMLEAK_END = "kmemleak-end.txt"   # kmemleak's scan after the last test, in the VM's results folder

# user_properties of a test report
DIAG = "ktap_diag"            # a KTAP diagnostic line
DESCRIPTION = "ktap_description"
DIRECTIVE = "ktap_directive"  # TIMEOUT for a test the VM overran
CRASH = "crash"               # crash.Crash.summary() of a kernel crash report
ARTIFACT = "artifact"         # a file kept for the test (host path)
FLAKY = "flaky"               # failed attempts before it passed
MATRIX = "matrix"             # a matrix cell's measurement: payloads.Measurement
FAULT = "fault"               # a fault test's outcome: payloads.FaultOutcome
SUBTESTS = "ktap_subtests"    # a kselftest's own output as KTAP, nested under its result
FIXTURE_TIME = "fixture_s"    # [fixture name, seconds its setup took] (guest/timing.py)


def results_dir(config):
    """The run's (or, in a guest, the VM's) results folder, made when missing."""
    path = Path(config.getoption("results_dir") or "results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_dir(results, nodeid):
    """The folder of one test's artifacts under ``results``."""
    return Path(results) / "artifacts" / re.sub(r"[^\w.-]+", "_", nodeid)
