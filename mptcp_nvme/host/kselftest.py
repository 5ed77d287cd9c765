"""Host side of the kernel tree's own kselftests ('mptcp-nvme kselftest', 'run
--kselftest'): selections checked against the tree, then built and installed the way
kselftest is shipped, all before any VM boots.

A selection is ``COLLECTION[:TEST]`` (``net/mptcp``, ``net/mptcp:pm_netlink.sh``); the
tests of a collection are what its Makefile emits for kselftest-list.txt (``make
emit_tests``, which builds nothing). The build runs ``make headers_install`` (the
tree's ``make headers`` stages the UAPI headers in its usr/include, as kselftest
documents; they are copied from there) and ``make -C tools/testing/selftests
TARGETS=... install`` with its objects under the cache (``O=``, one folder per tree, so
a second run rebuilds only what changed) and the install in the run's results folder,
where the guest runs it (guest/kselftest.py).
"""

import hashlib
import os
import shutil
from pathlib import Path

from mptcp_nvme import proc
from mptcp_nvme.channel import KSELFTEST_DIR
from mptcp_nvme.errors import UsageError
from mptcp_nvme.guest.kselftest import LIST_NAME, RUNNER
from mptcp_nvme.host.inputs.kernel import LoggedBuild
from mptcp_nvme.host.inputs.rootfs import cache_dir, cache_lock

SELFTESTS = Path("tools/testing/selftests")
BUILD_LOG = "kselftest-build.log"          # in the results folder


def parse_selection(text):
    """``COLLECTION[:TEST]`` -> (collection, test or None); UsageError if malformed."""
    collection, _, test = text.partition(":")
    collection = collection.strip("/")
    parts = collection.split("/")
    if not collection or any(part in ("", ".", "..") for part in parts) or ":" in test:
        raise UsageError(f"kselftest {text!r}: expected COLLECTION[:TEST], e.g. net/mptcp "
                         "or net/mptcp:pm_netlink.sh")
    return collection, test or None


def check_tree(tree):
    """The kernel tree as an absolute path; UsageError unless it has kselftests."""
    if not tree:
        raise UsageError("kselftests come from the kernel tree under test: give --kernel TREE")
    path = Path(tree).resolve()
    if not ((path / "Makefile").is_file() and (path / SELFTESTS / RUNNER).is_file()):
        raise UsageError(f"{tree}: not a kernel tree (no {SELFTESTS}/{RUNNER}); kselftests "
                         "need --kernel TREE")
    return path


def collection_tests(tree, collection):
    """The ``collection:test`` entries the collection's Makefile installs."""
    folder = tree / SELFTESTS / collection
    if not (folder / "Makefile").is_file():
        raise UsageError(f"kselftest {collection}: no such collection in {tree} "
                         f"({SELFTESTS}/{collection} has no Makefile)")
    emitted = proc.cmd(["make", "-s", "--no-print-directory", "-C", folder,
                        f"COLLECTION={collection}", "emit_tests"], fail=False, timeout=60)
    tests = [line.strip() for line in emitted.stdout.splitlines()
             if line.startswith(f"{collection}:")]
    if not tests:
        detail = (emitted.stderr.strip().splitlines() or ["it lists no tests"])[-1]
        raise UsageError(f"kselftest {collection}: no tests to run ({detail})")
    return tests


def resolve(tree, selections):
    """(the tree, the chosen ``collection:test`` entries in order); UsageError for a
    tree without kselftests, an unknown collection or an unknown test in it."""
    parsed = [parse_selection(text) for text in selections]
    tree = check_tree(tree)
    chosen, known = [], {}
    for collection, test in parsed:
        if collection not in known:
            known[collection] = collection_tests(tree, collection)
        if test is None:
            chosen += known[collection]
        elif f"{collection}:{test}" in known[collection]:
            chosen.append(f"{collection}:{test}")
        else:
            names = ", ".join(entry.partition(":")[2] for entry in known[collection])
            raise UsageError(f"kselftest {collection}:{test}: no such test in {collection} "
                             f"(it has {names})")
    return tree, list(dict.fromkeys(chosen))


def build_dir(tree):
    """The cached objects (O=) of one tree's kselftests."""
    key = hashlib.sha256(str(tree).encode()).hexdigest()[:12]
    return cache_dir() / "kselftest" / f"{tree.name}-{key}"


def install(tree, entries, results):
    """Build and install the collections of ``entries`` into the results folder; the
    pytest arguments of the entries (``.../kselftest-list.txt::collection:test``).
    SetupError with the first compiler error and the log when the build fails."""
    collections = list(dict.fromkeys(entry.rpartition(":")[0] for entry in entries))
    objects, target = build_dir(tree), Path(results).resolve() / KSELFTEST_DIR
    run = LoggedBuild(tree, Path(results) / BUILD_LOG,
                      what=f"kselftest build of {' '.join(collections)}")
    jobs = f"-j{os.cpu_count() or 1}"
    with cache_lock(objects.name):
        objects.mkdir(parents=True, exist_ok=True)
        run(["make", "-s", jobs, "-C", str(tree), f"INSTALL_HDR_PATH={objects}/usr",
             "headers_install"])
        shutil.rmtree(target, ignore_errors=True)
        run(["make", jobs, "-C", str(tree / SELFTESTS), f"TARGETS={' '.join(collections)}",
             f"O={objects}", f"KSFT_INSTALL_PATH={target}", "FORCE_TARGETS=1", "install"])
    listed = target / LIST_NAME
    return [f"{listed}::{entry}" for entry in entries]
