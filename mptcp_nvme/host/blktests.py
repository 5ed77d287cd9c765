"""Host side of 'mptcp-nvme blktests': a user's blktests checkout checked, its tests
chosen and the checkout copied into the run's results folder, where the guest runs
it (guest/blktests.py), all before any VM boots.

A test is ``group`` (every test of it) or ``group/NNN``; the default is ``nvme``. The
transport is NVMET_TRTYPES: tcp or loop. blktests cannot take mptcp (its transport list
is loop, tcp, rdma, fc): for NVMe over MPTCP the suite's own parity cases cover its tests
(README "blktests parity"). This project neither ships nor fetches nor builds blktests:
the checkout is the user's, built by them (``make`` in it) where its tests need helpers.
"""

import shutil
from pathlib import Path

from mptcp_nvme.channel import BLKTESTS_DIR
from mptcp_nvme.errors import UsageError
from mptcp_nvme.guest.blktests import CHECK, LIST_NAME, OUTPUT
from mptcp_nvme.vocabulary import BLKTESTS_TRTYPES

DEFAULT_TESTS = ("nvme",)


def check_trtype(trtype):
    if trtype == "mptcp":
        raise UsageError("blktests cannot run NVMe over MPTCP: its nvme tests take "
                         "NVMET_TRTYPES loop, tcp, rdma or fc; the suite's own cases cover "
                         "them over mptcp (README: blktests parity)")
    if trtype not in BLKTESTS_TRTYPES:
        raise UsageError(f"blktests --trtype must be one of {', '.join(BLKTESTS_TRTYPES)}, "
                         f"not {trtype!r}")
    return trtype


def check_checkout(folder):
    """The checkout as an absolute path; UsageError unless it is a blktests checkout."""
    if not folder:
        raise UsageError("give --blktests DIR, a blktests checkout")
    path = Path(folder).resolve()
    if not ((path / CHECK).is_file() and (path / "tests").is_dir()
            and (path / "common" / "rc").is_file()):
        raise UsageError(f"{folder}: not a blktests checkout (no ./{CHECK}, tests/ and "
                         "common/rc)")
    return path


def resolve(checkout, selections):
    """The ``group/NNN`` tests ``selections`` name, in order; UsageError for an unknown
    group or test."""
    chosen = []
    for text in selections or DEFAULT_TESTS:
        group, _, number = text.strip("/").partition("/")
        folder = checkout / "tests" / group
        if not group or not folder.is_dir() or ".." in text:
            raise UsageError(f"blktests {text!r}: no such group in {checkout} (tests/{group})")
        known = sorted(p.name for p in folder.iterdir()
                       if p.is_file() and p.name.isdigit() and len(p.name) == 3)
        if not number:
            chosen += [f"{group}/{name}" for name in known]
        elif number in known:
            chosen.append(f"{group}/{number}")
        else:
            raise UsageError(f"blktests {text!r}: no such test in tests/{group} "
                             f"(it has {known[0]}..{known[-1]})" if known else
                             f"blktests {text!r}: tests/{group} has no tests")
    return list(dict.fromkeys(chosen))


def install(checkout, tests, results):
    """Copy the checkout (without its own results and .git) into the results folder and
    list ``tests`` in it; the pytest arguments (``.../blktests-list.txt::group/NNN``)."""
    target = Path(results).resolve() / BLKTESTS_DIR
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(checkout, target, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", OUTPUT))
    listed = target / LIST_NAME
    listed.write_text("".join(f"{test}\n" for test in tests))
    return [f"{listed}::{test}" for test in tests]
