"""The same selection run on the base and on base+series, and what changed between
their results.json documents."""

import re
import shutil
import sys
from pathlib import Path

from mptcp_nvme import SOURCE_DIR
from mptcp_nvme import proc
from mptcp_nvme.errors import SetupError
from mptcp_nvme.host.results.outcome import FAILED

SKIPPED = ("skip",)
_FINGERPRINT = re.compile(r"\(fingerprint (\S+)\)\s*$")


def crash_fingerprints(test):
    """The fingerprints of a results.json test's crash summaries."""
    found = (_FINGERPRINT.search(c) for c in test.get("crashes") or ())
    return [m.group(1) for m in found if m]


def compare(base, series):
    """What changed from the base's results.json document to the series': {category:
    [node ids]} for new_failures, fixed, still_failing, new_skips, not_run (in the base
    only), and new_crashes / known_crashes as [(node id, fingerprint)] (a fingerprint the
    base also crashed with, in any test, is known). Each list is sorted by node id: a
    results.json lists its tests as they finished, which differs between runs of one
    selection, and a bot posts the same description for the same changes."""
    before = {t["nodeid"]: t for t in base["tests"]}
    base_crashes = {fp for t in base["tests"] for fp in crash_fingerprints(t)}
    changes = {name: [] for name in ("new_failures", "fixed", "still_failing", "new_skips",
                                     "not_run", "new_crashes", "known_crashes")}
    for test in series["tests"]:
        nodeid, now = test["nodeid"], test["result"]
        was = before.get(nodeid, {}).get("result")
        if now in FAILED:
            changes["still_failing" if was in FAILED else "new_failures"].append(nodeid)
        elif was in FAILED:
            changes["fixed" if now not in SKIPPED else "new_skips"].append(nodeid)
        elif now in SKIPPED and was not in SKIPPED:
            changes["new_skips"].append(nodeid)
        for fingerprint in crash_fingerprints(test):
            known = fingerprint in base_crashes
            changes["known_crashes" if known else "new_crashes"].append((nodeid, fingerprint))
    ran = {t["nodeid"] for t in series["tests"]}
    changes["not_run"] = [nodeid for nodeid in before if nodeid not in ran]
    return {name: sorted(found) for name, found in changes.items()}


def exit_code(changes):
    """1 on new failures or new crashes, else 0."""
    return 1 if changes["new_failures"] or changes["new_crashes"] else 0


def run_selection(kernel_tree, results, selection):
    """``mptcp-nvme run --kernel kernel_tree --results-dir results *selection`` as a
    subprocess, its output on stderr and in results/run.log, KTAP in results/ktap.txt;
    its results.json document. SetupError when it ended without one."""
    from mptcp_nvme.host.results import merge, summary
    results = Path(results)
    _cli("run", kernel_tree, results, selection, "results.json")
    document = merge.read_run(results)[1]
    with open(results / "ktap.txt", "w") as ktap:
        summary.write_ktap(document, ktap)
    return document


def run_matrix(kernel_tree, base_tree, results, args):
    """``mptcp-nvme matrix --kernel kernel_tree --baseline-kernel base_tree --results-dir
    results *args`` as a subprocess, its output on stderr and in results/matrix.log; its
    exit code (1 when a cell failed). SetupError when it ended without matrix.json."""
    return _cli("matrix", kernel_tree, results, ["--baseline-kernel", str(base_tree), *args],
                "matrix.json")


def _cli(command, kernel_tree, results, args, product):
    """``mptcp-nvme COMMAND --kernel kernel_tree --results-dir results *args`` as a
    subprocess into a fresh ``results``, its output on stderr and in results/COMMAND.log
    as it comes; its exit code. SetupError when it ended without results/``product``."""
    results = Path(results)
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    argv = [sys.executable, "-m", "mptcp_nvme.host.cli", command, "--kernel", str(kernel_tree),
            "--results-dir", str(results), *args]
    log_path = results / f"{command}.log"
    with open(log_path, "w") as log:
        def on_line(line):
            log.write(line)
            sys.stderr.write(line)
        code = proc.stream(argv, on_line, cwd=SOURCE_DIR)
    if not (results / product).is_file():
        raise SetupError(f"mptcp-nvme {command} on {kernel_tree} exited {code} without "
                         f"{product} (log: {log_path})")
    return code
