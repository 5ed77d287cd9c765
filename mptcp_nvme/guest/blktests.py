"""A user's blktests checkout as pytest items ('mptcp-nvme blktests'): one item per test of
the blktests-list.txt the host wrote into its copy of the checkout (host/blktests.py),
each run by blktests' own ``./check`` in the guest with NVMET_TRTYPES from the run's
trtype (tcp or loop; blktests has no mptcp) and, with --quick, QUICK_RUN and TIMEOUT.

blktests' verdict is the item's: its results file (``results/nodev_tr_<trtype>/nvme/003``:
``status``, ``reason``, ``runtime``, tab-separated) says pass, fail or "not run", and why;
``check``'s own output gives a "not run" its reasons. The test's ``.out.bad``, ``.dmesg``,
``.full`` and ``.kmemleak`` go to the item's artifacts, its output nested under its KTAP
result. Parsing is pure (parse_results_file, skip_reasons), unit-tested on result files
captured in a guest (tests/data/blktests/). Node ids do not depend on where the copy
lies: ``blktests::nvme/003``.
"""

import os
import re
import shutil

import pytest

from mptcp_nvme import proc
from mptcp_nvme.channel import BLKTESTS_TOOLS, SUBTESTS, artifact_dir, results_dir

LIST_NAME = "blktests-list.txt"
CHECK = "check"
NODE = "blktests"
OUTPUT = "results"                 # check -o: where blktests writes its results files
ARTIFACTS = (".out.bad", ".dmesg", ".full", ".kmemleak")
TIMEOUT_S = 1800                   # one blktests test at most; check has no limit of its own
QUICK_TIMEOUT_S = 2                # TIMEOUT with --quick: options.QUICK_S, every time-based phase


def entries(text):
    """The ``group/NNN`` entries of a blktests-list.txt."""
    return [line.strip() for line in text.splitlines() if re.fullmatch(r"\w+/\d{3}", line.strip())]


def parse_results_file(text):
    """A blktests results file (``key<TAB>value`` lines) as a dict."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("\t")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def skip_reasons(output, test):
    """The reasons ``check`` printed under ``test``'s "[not run]" line (indented lines)."""
    lines = output.splitlines()
    reasons = []
    for index, line in enumerate(lines):
        if line.startswith(test) and "[not run]" in line:
            for following in lines[index + 1:]:
                if not following.startswith("    "):
                    break
                reasons.append(following.strip())
    return reasons


def results_folder(checkout, trtype):
    """Where ``check -o OUTPUT`` writes a no-device test's results for ``trtype`` (its
    COND_DESC ``tr=<trtype>``: nodev_tr_<trtype>)."""
    return checkout / OUTPUT / f"nodev_tr_{trtype}"


def environment(trtype, quick, base=None):
    """check's environment: NVMET_TRTYPES, QUICK_RUN and TIMEOUT with --quick, and
    BLKTESTS_TOOLS on PATH (the rootfs' udevadm, which the guest's boot must not see)."""
    base = dict(os.environ if base is None else base)
    env = dict(base, NVMET_TRTYPES=trtype,
               PATH=":".join(filter(None, (base.get("PATH"), BLKTESTS_TOOLS))))
    if quick:
        env.update(QUICK_RUN="1", TIMEOUT=str(QUICK_TIMEOUT_S))
    return env


class BlktestsFailed(Exception):
    """A blktests test failed; the message is its failure text."""


class BlktestsList(pytest.File):
    def collect(self):
        for entry in entries(self.path.read_text()):
            yield BlktestsItem.from_parent(self, name=entry)


class BlktestsItem(pytest.Item):
    """One blktests test, run by ``./check`` in the copy of the checkout it was listed in."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.originalname = f"blktests {self.name}"
        self.add_marker(pytest.mark.timeout(TIMEOUT_S + 60))

    def runtest(self):
        checkout = self.path.parent
        trtype = self.config.getoption("blktests_trtype") or "tcp"
        quick = self.config.getoption("quick")
        run = proc.cmd(["./" + CHECK, "-o", OUTPUT, self.name], cwd=checkout, fail=False,
                       timeout=TIMEOUT_S, env=environment(trtype, quick))
        logs = artifact_dir(results_dir(self.config), self.nodeid)
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "check.txt").write_text(run.stdout + run.stderr)
        seqres = results_folder(checkout, trtype) / self.name
        if not seqres.is_file():
            raise BlktestsFailed(f"./{CHECK} {self.name} wrote no results file ({seqres}), "
                                 f"exit {run.ret}:\n{(run.stdout + run.stderr).strip()[-2000:]}")
        fields = parse_results_file(seqres.read_text())
        shutil.copy(seqres, logs / "results")
        texts = []
        for suffix in ARTIFACTS:
            path = seqres.with_name(seqres.name + suffix)
            if path.is_file():
                shutil.copy(path, logs / path.name)
                texts.append((suffix, path.read_text(errors="replace")))
        body = "\n".join(f"# {key}: {value}" for key, value in fields.items())
        for suffix, text in texts:
            body += f"\n# {suffix}:\n" + "\n".join(f"#   {line}" for line in text.splitlines()[:50])
        self.user_properties.append((SUBTESTS, body))
        status = fields.get("status")
        if status == "not run":
            pytest.skip("blktests: " + ("; ".join(skip_reasons(run.stdout, self.name))
                                        or "not run"))
        if status != "pass":
            detail = "\n".join(f"{suffix}:\n{text.strip()[-1500:]}" for suffix, text in texts)
            raise BlktestsFailed(f"blktests {self.name}: {status or 'no status'} "
                                 f"(reason {fields.get('reason', '?')}, runtime "
                                 f"{fields.get('runtime', '?')})\n{detail}".rstrip())

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, BlktestsFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


def collect_file(file_path, parent):
    """pytest_collect_file for plugin.py: a blktests copy's list, with a node id that
    does not depend on where the copy lies."""
    if file_path.name == LIST_NAME and (file_path.parent / CHECK).is_file():
        return BlktestsList.from_parent(parent, path=file_path, nodeid=NODE)
    return None
