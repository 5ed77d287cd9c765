"""Every option of a run, declared once: type, default, choices or range, help, and
where it appears. The ``mptcp-nvme`` parsers, the pytest options and the JSON handed to
the guest are generated from OPTIONS (tests/unit/shared/test_options.py proves they agree).

Values are checked here, on the host, before any VM boots: a bad one is a UsageError
(one line, exit 2). File options are read and validated on the host, and the guest gets
their content, never a host path it may not see.
"""

import argparse
import dataclasses
import json
import re
from pathlib import Path

from mptcp_nvme.errors import UsageError
from mptcp_nvme.vocabulary import (ACCELS, BACKINGS, BLKTESTS_TRTYPES, BOND_MODES, DM_SELECTORS,
                                   FAMILIES, FAULTS, IOPOLICIES, MULTIPATH, TRTYPES)

MAX_PATHS = 8
MAX_VMS = 16
QUICK_S = 2             # --quick: the longest a time-based phase of a selftest runs
_MEMORY = re.compile(r"[1-9]\d*[MG]")


@dataclasses.dataclass(frozen=True)
class Option:
    name: str                      # python name; the flag is --name-with-dashes
    help: str
    type: type = str
    default: object = None
    choices: tuple | None = None
    bounds: tuple | None = None    # (low, high) for numbers, high may be None
    repeat: bool = False           # repeatable: a list
    flag: bool = False             # store_true
    commands: tuple = ("run",)     # mptcp-nvme subcommands that take it
    guest: bool = False            # handed to the guest (shapes the selftests)
    short: str | None = None
    metavar: str | None = None
    check: object = None           # value -> value, raising ValueError with the reason

    @property
    def flag_name(self):
        return "--" + self.name.replace("_", "-")

    def convert(self, text):
        """One value from the command line, checked; ArgumentTypeError if bad."""
        try:
            value = self.type(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"invalid {self.type.__name__} value: {text!r}") from None
        if self.choices and value not in self.choices:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {value!r} (choose from {', '.join(map(str, self.choices))})")
        if self.bounds:
            low, high = self.bounds
            if value < low or (high is not None and value > high):
                span = f"{low}..{high}" if high is not None else f">= {low}"
                raise argparse.ArgumentTypeError(f"must be {span}, not {text}")
        if self.check is not None:
            try:
                value = self.check(value)
            except (ValueError, UsageError) as err:
                raise argparse.ArgumentTypeError(str(err)) from None
        return value

    def argparse_kwargs(self):
        kwargs = {"help": self.help, "dest": self.name}
        if self.flag:
            return {**kwargs, "action": "store_true", "default": False}
        kwargs["type"] = self.convert
        if self.metavar or self.choices:
            kwargs["metavar"] = self.metavar or "|".join(map(str, self.choices))
        if self.repeat:
            return {**kwargs, "action": "append", "default": None}
        return {**kwargs, "default": self.default}


def _memory(text):
    if not _MEMORY.fullmatch(text):
        raise ValueError(f"must be like 2G or 512M, not {text!r}")
    return text


def _topology_file(text):
    """A valid topology file, as an absolute path (validated here, on the host)."""
    from mptcp_nvme.topology import load_topology
    load_topology(text)
    return str(Path(text).resolve())


def _known_issues_file(text):
    """A valid known-issues file, as an absolute path (mptcp_nvme/known_issues.py)."""
    from mptcp_nvme import known_issues
    known_issues.load(text)
    return str(Path(text).resolve())


def _vms(text):
    """-n: 1..MAX_VMS or auto (host/vm/capacity.py decides, on the host)."""
    if text == "auto":
        return text
    if not text.isdigit() or not 1 <= int(text) <= MAX_VMS:
        raise ValueError(f"must be 1..{MAX_VMS} or auto, not {text!r}")
    return int(text)


_SHARD = re.compile(r"(\d+)/(\d+)")


def shard_spec(text):
    """(I, N) of --shard 'I/N', 1 <= I <= N; ValueError saying what is wrong."""
    match = _SHARD.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"must be I/N (e.g. 1/4), not {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise ValueError(f"must be I/N with 1 <= I <= N, not {text!r}")
    return index, count


def _shard(text):
    shard_spec(text)
    return str(text).strip()


def durations(path):
    """{node id: seconds} of --durations-from (a results.json); UsageError if not one."""
    try:
        tests = json.loads(Path(path).read_text())["tests"]
        return {t["nodeid"]: t["time_ms"] / 1000 for t in tests
                if isinstance(t.get("time_ms"), (int, float))}
    except OSError as err:
        raise UsageError(f"{path}: {err.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{path}: not a results.json (no tests with nodeid and time_ms)") from None


def _durations(text):
    durations(text)
    return str(Path(text).resolve())


def _rate(text):
    """A netem rate like 30mbit (checked by the topology's own parser)."""
    from mptcp_nvme.topology import Netem
    try:
        Netem.parse(rate=text)
    except ValueError as err:
        raise ValueError(f"bad rate {text!r}: {err}") from None
    return text


RUNS = ("run", "script", "matrix")        # the commands that boot VMs and run selftests
VM = ("setup", *RUNS)
SERIES = ("series",)                      # 'run' on a base and on base+series (host/series/)
OPTIONS = (
    # the kernel and the VM
    Option("kernel", "kernel tree, bzImage, or version installed in the rootfs "
           "(default: the newest in the rootfs)", commands=VM, metavar="TREE|BZIMAGE|VERSION"),
    Option("modules", "lib/modules/<release> directory to go with a bzImage", commands=VM,
           metavar="DIR"),
    Option("rootfs", "guest root: a directory built by 'setup', or 'host'",
           commands=(*VM, *SERIES),
           metavar="DIR|host"),
    Option("accel", "auto uses KVM only when a probe boot worked", default="auto",
           choices=ACCELS, commands=(*VM, *SERIES)),
    Option("cpus", "guest vCPUs", type=int, default=2, bounds=(1, 64), commands=(*RUNS, *SERIES)),
    Option("memory", "guest memory, e.g. 2G", default="2G", commands=(*RUNS, *SERIES),
           check=_memory),
    Option("append", "extra kernel command line (repeatable)", repeat=True,
           commands=(*RUNS, *SERIES), metavar="ARG"),
    Option("boot_timeout", "seconds for the guest agent to come up", type=float, default=240.0,
           bounds=(1, None), commands=(*RUNS, *SERIES)),
    Option("test_timeout", "seconds per test in the VM", type=float, default=600.0,
           bounds=(1, None), commands=(*RUNS, *SERIES)),
    Option("vms", "VMs side by side (pytest-xdist), tests spread across them, longest "
           "first; auto: as many as the host's cores and memory run (default: auto, but 1 "
           "for 'matrix', whose cells are measurements, and for a single test)", short="-n",
           metavar="N|auto", check=_vms, commands=("run", "matrix", *SERIES)),
    Option("retry_failed", "run a failed test again on a fresh VM, up to N times; one that "
           "passes then is reported passed and flaky (a crash is not retried)", type=int,
           default=0, bounds=(0, 10), metavar="N", commands=("run", *SERIES)),
    # reporting
    Option("results_dir", "console logs, dmesg, artifacts, junit.xml, results.json "
           "(default: results/<timestamp>)", commands=(*RUNS, "merge", *SERIES), metavar="DIR"),
    Option("ktap_version", "13: 'TAP version 13' (as mptcp_nvme.sh), 1: 'KTAP version 1'",
           type=int, default=13, choices=(13, 1), commands=("run", "merge")),
    # CI bots (host/shard.py, host/budget.py, host/results/kcidb.py)
    Option("shard", "run the I-th of N deterministic parts of the selected tests (by node "
           "id; balanced by --durations-from, else by count)", metavar="I/N",
           check=_shard),
    Option("durations_from", "with --shard: a previous run's results.json whose test times "
           "balance the parts", metavar="RESULTS_JSON",
           check=_durations),
    Option("time_budget", "wall-clock seconds for the whole run: tests not started by then "
           "are reported SKIP 'time budget' (a running test is not cut)", type=float,
           bounds=(0, None), metavar="S", commands=("run", *SERIES)),
    Option("kcidb", "also write the results as KCIDB I/O JSON (validated) to FILE",
           commands=("run", "merge"), metavar="FILE"),
    # what the selftests check
    Option("expect_all_features", "a missing kernel feature fails instead of skipping",
           flag=True, guest=True, commands=(*RUNS, *SERIES)),
    Option("known_issues", "known kernel issues: a failure one explains is XFAIL, an "
           "'always' one that did not happen XPASS (default: known-issues.toml of the tree)",
           metavar="FILE", check=_known_issues_file, commands=(*RUNS, *SERIES)),
    Option("allow_missing", "with --expect-all-features these requirements may still SKIP "
           "(fnmatch, e.g. tls:mptcp; repeatable)", repeat=True, guest=True,
           metavar="REQUIREMENT", commands=("run", *SERIES)),
    Option("trtype", "NVMe transport(s) to test (repeatable)", choices=TRTYPES, repeat=True,
           guest=True, commands=("run", "matrix", *SERIES)),
    Option("paths", f"number(s) of paths, 1..{MAX_PATHS} (repeatable)", type=int,
           bounds=(1, MAX_PATHS), repeat=True, guest=True, metavar="N",
           commands=("run", "matrix", *SERIES)),
    Option("iopolicy", "multipath iopolicy(ies) (repeatable; the matrix's default: every "
           "one the kernel offers)", choices=IOPOLICIES, repeat=True, guest=True,
           commands=("run", "matrix", *SERIES)),
    Option("multipath", "native: NVMe multipath with an iopolicy; dm: native multipath off "
           "(nvme_core reloaded with multipath=N) and dm-multipath over the per-path "
           "namespaces with a path selector; bond: one path over a Linux bond of every link "
           "in a bonding mode (repeatable; default native)", choices=MULTIPATH,
           repeat=True, guest=True, commands=("run", "matrix", *SERIES)),
    Option("bond_mode", "bonding mode(s) of the --multipath bond cases: NVMe over one bond "
           "of every link per side (repeatable; default all)", choices=BOND_MODES, repeat=True,
           guest=True, commands=("run", "matrix", *SERIES)),
    Option("dm_selector", "dm-multipath path selector(s) of the --multipath dm cases "
           "(repeatable; default all)", choices=DM_SELECTORS, repeat=True, guest=True,
           commands=("run", "matrix", *SERIES)),
    Option("backing", "nvmet backing store(s): loop (a sparse file on a loop device, as "
           "mptcp_nvme.sh), file (nvmet's file backend), null_blk (memory-backed); the "
           "backing cases take each (default all), every other test the first (default loop)",
           choices=BACKINGS, repeat=True, guest=True, commands=("run", "matrix", *SERIES)),
    Option("fault", "fault(s) of the fault tests (repeatable; default all): "
           + ", ".join(FAULTS), choices=FAULTS, repeat=True, guest=True,
           commands=("run", *SERIES)),
    Option("loss", "mptcp_nvme.sh's loss argument(s): 0 none, 1 netem delay and loss on every "
           "link (5ms 0.5%% at the script's 1000mbit, scaled with --rate; repeatable)",
           type=int, choices=(0, 1), repeat=True, guest=True, commands=("run", "matrix", *SERIES)),
    Option("loss_links", "with --loss 1: the delay and loss on this many of the last links "
           "only, the others clean (default: every link, as mptcp_nvme.sh)", type=int,
           bounds=(1, 8), guest=True, metavar="N", commands=("run", "matrix", *SERIES)),
    Option("rate", "netem rate of every link of the script's topology, e.g. 30mbit (default "
           "1000mbit as mptcp_nvme.sh; the matrix's 30mbit)", guest=True, commands=(*RUNS, *SERIES),
           check=_rate, metavar="RATE"),
    Option("quick", "a smoke run, as blktests' QUICK_RUN: every time-based phase (fio "
           f"runtimes, MPTCP streams, a fault's baseline and window, --runtime) at most "
           f"{QUICK_S} s, every check still made (the keep-alive fault keeps its window: it "
           "must outlast the timeout)", flag=True, guest=True, commands=(*RUNS, *SERIES)),
    Option("runtime", "seconds of each fio job of the script scenario (mptcp_nvme.sh: 10)",
           type=int, default=10, bounds=(1, 3600), guest=True, commands=(*RUNS, *SERIES)),
    Option("repeat", "matrix: runs of every cell (median and spread reported)", type=int,
           default=3, bounds=(1, 100), guest=True, commands=("matrix",)),
    Option("tls", "the script scenario over TLS 1.3", flag=True, guest=True,
           commands=("run", "matrix", *SERIES)),
    Option("family", "address family of the script scenario (repeatable)", choices=FAMILIES,
           repeat=True, guest=True, commands=("run", *SERIES)),
    Option("host_iface", "script scenario, as the newer mptcp_nvme.sh: --host-iface on every "
           "discover and connect, and a check that the queue sockets are bound to it "
           "(e.g. ns2eth1)", guest=True, commands=("run", "script", *SERIES), metavar="IFNAME"),
    Option("topology", "a topology TOML file instead of the script's N-path one (its "
           "content goes to the guest)", guest=True, metavar="FILE", check=_topology_file,
           commands=("run", "matrix", *SERIES)),
    # the kernel tree's own kselftests (host/kselftest.py, guest/kselftest.py)
    Option("kselftest", "also run these kselftests of the --kernel tree, e.g. net/mptcp or "
           "net/mptcp:pm_netlink.sh (repeatable; built on the host, run with kselftest's "
           "runner in the guest)", repeat=True, metavar="COLLECTION[:TEST]"),
    Option("kselftest_timeout", "seconds per kselftest instead of its collection's "
           "settings (run_kselftest.sh -o)", type=int, bounds=(1, None), guest=True,
           metavar="S"),
    # a user's blktests checkout (host/blktests.py, guest/blktests.py): 'blktests --trtype'
    Option("blktests_trtype", "blktests' NVMET_TRTYPES (mptcp-nvme blktests --trtype)",
           choices=BLKTESTS_TRTYPES, guest=True, commands=()),
    # the matrix's own
    Option("resume", "matrix: continue in this results folder, skipping the cells "
           "matrix.json has already measured", commands=("matrix",), metavar="DIR"),
    Option("baseline_kernel", "matrix: run the same cells on this kernel too and compare",
           commands=("matrix",), metavar="TREE|BZIMAGE|VERSION"),
    Option("calibrate", "matrix: runs of the bare calibration cell (the same fio job from a "
           "plain shell, per transport) beside the framework's; 0: none", type=int,
           default=1, bounds=(0, 100), commands=("matrix",), metavar="N"),
    Option("no_transport_sampling", "matrix: no tcp_info sampling of the queue connections "
           "during the cells (to weigh its cost against a run with it)", flag=True,
           guest=True, commands=("matrix",)),
    Option("sampling_cost", "matrix: each fabric cell also measured without tcp_info "
           "sampling, its repeats beside the sampled ones in the same run: matrix.md "
           "gives the sampling's cost per cell", flag=True, guest=True, commands=("matrix",)),
)
BY_NAME = {option.name: option for option in OPTIONS}


def add_arguments(parser, command, exclude=()):
    """The options of ``command`` on an argparse parser, but those named in ``exclude``."""
    for option in OPTIONS:
        if command in option.commands and option.name not in exclude:
            flags = [option.short, option.flag_name] if option.short else [option.flag_name]
            parser.add_argument(*flags, **option.argparse_kwargs())


def add_blktests_arguments(parser):
    """'mptcp-nvme blktests': run's options but --trtype, which here is blktests'
    NVMET_TRTYPES (the blktests_trtype option: tcp or loop; mptcp is refused with its
    reason by host/blktests.py, so argparse takes any word)."""
    add_arguments(parser, "run", exclude=("trtype", "kselftest"))
    option = BY_NAME["blktests_trtype"]
    parser.add_argument("--trtype", dest=option.name, default="tcp", metavar="TRTYPE",
                        help=f"NVMET_TRTYPES: {' or '.join(option.choices)}; blktests has no mptcp")


def add_pytest_options(group):
    """Every option on the pytest plugin's option group (the host's pytest and the
    guest's take the same ones)."""
    for option in OPTIONS:
        if for_pytest(option) and not option.short:      # -n is xdist's own, -k pytest's
            group.addoption(option.flag_name, **option.argparse_kwargs())


def for_pytest(option):
    """Whether pytest (host and guest) takes ``option``: not the matrix's orchestration
    (resume, baseline...), which never reaches a test."""
    return option.guest or "run" in option.commands or "script" in option.commands


def defaults(command):
    """{name: value} of ``command``'s options when none is given, as argparse makes them
    (a string default goes through the option's type)."""
    chosen = {}
    for option in OPTIONS:
        if command in option.commands:
            default = option.argparse_kwargs()["default"]
            chosen[option.name] = option.convert(default) if isinstance(default, str) else default
    return chosen


def values(namespace):
    """{name: value} of every option present on an argparse/pytest namespace."""
    return {o.name: getattr(namespace, o.name) for o in OPTIONS if hasattr(namespace, o.name)}


def to_argv(chosen, only=None):
    """Command-line arguments that give ``chosen`` ({name: value}); defaults left out."""
    argv = []
    for option in OPTIONS:
        if option.name not in chosen or (only and not only(option)):
            continue
        value = chosen[option.name]
        if value is None or value == option.default or (option.flag and not value):
            continue
        flag = option.short or option.flag_name
        if option.flag:
            argv.append(flag)
        elif option.repeat:
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def guest_config(chosen):
    """The JSON text handed to the guest: the options that shape the selftests, with a
    file option's content in place of its host path."""
    data = {o.name: chosen.get(o.name) for o in OPTIONS if o.guest}
    if data.get("topology"):
        data["topology"] = Path(data["topology"]).read_text()
    return json.dumps(data, sort_keys=True)


def apply_guest_config(text, namespace, scratch):
    """Set the guest's pytest options from guest_config() JSON; a file option's content
    is written under ``scratch`` and the option names that copy."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise UsageError(f"guest configuration is not JSON: {err}") from None
    for name, value in data.items():
        option = BY_NAME.get(name)
        if option is None or not option.guest:
            raise UsageError(f"guest configuration has an unknown option {name!r}")
        if name == "topology" and value is not None:
            copy = Path(scratch) / "topology.toml"
            copy.write_text(value)
            value = str(copy)
        setattr(namespace, name, value)
