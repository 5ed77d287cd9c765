"""The ``mptcp-nvme`` command: setup, run, build."""

import datetime
import sys
from pathlib import Path

from . import kernel as kernel_mod
from . import rootfs
from .errors import ArgumentParser, UsageError, run_command
from .nvmet import TRTYPES
from .plugin import path_count
from .requirements import IOPOLICIES
from .topology import FAMILIES, load_topology
from .vm import ACCELS, require_host_tools, resolve_accel

SOURCE_DIR = Path(__file__).resolve().parent.parent
SELFTESTS = SOURCE_DIR / "selftests"


def add_vm_options(parser):
    parser.add_argument("--kernel", help="kernel tree, bzImage, or version installed in the rootfs "
                        "(default: the newest in the rootfs)")
    parser.add_argument("--modules", help="lib/modules/<release> directory to use with a bzImage")
    parser.add_argument("--rootfs", help="guest root: a directory built by 'setup', or 'host'")
    parser.add_argument("--accel", default="auto", choices=ACCELS)


def add_script_options(parser, family=True):
    if family:
        parser.add_argument("--family", action="append", choices=FAMILIES,
                            help="address family of the script scenario: ipv4|ipv6|v4map")
    parser.add_argument("--host-iface", metavar="IFNAME",
                        help="script scenario, as the newer mptcp_nvme.sh: --host-iface on "
                             "every discover and connect, and a check that the queue sockets "
                             "are bound to it (e.g. ns2eth1)")


def build_parser():
    parser = ArgumentParser(prog="mptcp-nvme", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    setup = sub.add_parser("setup", help="build the guest rootfs and probe KVM (cached)")
    add_vm_options(setup)

    run = sub.add_parser("run", help="boot the kernel and run the selftests, KTAP on stdout")
    add_vm_options(run)
    run.add_argument("tests", nargs="*", help="selftest files or node ids (default: all)")
    run.add_argument("-k", dest="keyword", help="pytest -k expression")
    run.add_argument("-n", "--vms", type=int, default=1, help="VMs side by side (pytest-xdist)")
    run.add_argument("--cpus", type=int, default=2)
    run.add_argument("--memory", default="2G")
    run.add_argument("--append", action="append", default=[], help="extra kernel command line")
    run.add_argument("--boot-timeout", type=float, default=240.0)
    run.add_argument("--test-timeout", type=float, default=600.0)
    run.add_argument("--results-dir", help="default: results/<timestamp>")
    run.add_argument("--ktap-version", type=int, choices=(13, 1), default=13)
    run.add_argument("--expect-all-features", action="store_true",
                     help="a missing kernel feature is a failure, not a SKIP")
    run.add_argument("--allow-missing", action="append", metavar="REQUIREMENT",
                     help="with --expect-all-features, these may still SKIP (e.g. tls:mptcp)")
    run.add_argument("--trtype", action="append", choices=TRTYPES, help="repeatable")
    run.add_argument("--paths", action="append", type=path_count, help="1..8, repeatable")
    run.add_argument("--iopolicy", action="append", choices=IOPOLICIES, help="repeatable")
    run.add_argument("--loss", action="store_true", help="netem delay 5ms loss 0.5%% per link")
    run.add_argument("--tls", action="store_true", help="the script scenario over TLS 1.3")
    run.add_argument("--topology", help="topology TOML file (e.g. topologies/asymmetric.toml)")
    add_script_options(run)

    script = sub.add_parser("script", help="mptcp_nvme.sh's scenario with its arguments",
                            usage="mptcp-nvme script [ipv4|ipv6|v4map] [tcp|mptcp] [1..4] "
                                  "[numa|round-robin|queue-depth] [0|1] [tls] [options]")
    add_vm_options(script)
    script.add_argument("script_args", nargs="*", metavar="ARG")
    add_script_options(script, family=False)
    script.add_argument("--expect-all-features", action="store_true",
                        help="a missing kernel feature is a failure, not a SKIP")
    script.add_argument("--results-dir")

    build = sub.add_parser("build", help="build a kernel tree with vng and kconfigs/ fragments")
    build.add_argument("tree")
    build.add_argument("--debug", action="store_true", help="add KASAN, kmemleak, lockdep")
    build.add_argument("-j", "--jobs", type=int)
    build.add_argument("--trim", action="store_true",
                       help="also kconfigs/trim.config: off what a guest never uses (DRM, "
                            "sound, USB...), about half the cold build time")
    build.add_argument("--log", help=f"build output (default: TREE/{kernel_mod.BUILD_LOG})")
    return parser


def cmd_setup(args):
    require_host_tools()
    root = rootfs.ensure(args.rootfs)
    kernel = kernel_mod.locate(args.kernel, root, args.modules)
    accel, why = resolve_accel(args.accel, kernel.image)
    print(f"rootfs: {root}")
    if root != Path("/"):
        print(f"rootfs image: {rootfs.disk_image(root)}")
    print(f"kernel: {kernel.origin} ({kernel.release})")
    print(f"accel: {accel} ({why})")
    return 0


def cmd_run(args):
    import pytest

    from .plugin import KTAP_EXIT

    root = rootfs.ensure(args.rootfs)
    kernel_mod.locate(args.kernel, root, args.modules)      # bad --kernel: fail before pytest
    tests = [str(Path(t).resolve()) if "::" not in t else t for t in args.tests] or [str(SELFTESTS)]
    for test in tests:
        path = Path(test.partition("::")[0]).resolve()
        if not path.exists():
            raise UsageError(f"{test}: no such selftest file or directory")
        if SOURCE_DIR not in (path, *path.parents):
            raise UsageError(f"{test}: selftests must be inside {SOURCE_DIR} (shared with the guest)")
    require_host_tools()
    results = Path(args.results_dir or SOURCE_DIR / "results" /
                   datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    results.mkdir(parents=True, exist_ok=True)
    argv = ["--vm", "--ktap", "-", "-p", "no:terminal", "-p", "no:cacheprovider",
            "--rootdir", str(SOURCE_DIR), "--results-dir", str(results),
            "--junitxml", str(results / "junit.xml"),
            "--rootfs", "host" if root == Path("/") else str(root),
            "--accel", args.accel, "--cpus", str(args.cpus), "--memory", args.memory,
            "--boot-timeout", str(args.boot_timeout), "--test-timeout", str(args.test_timeout),
            "--ktap-version", str(args.ktap_version)]
    if args.topology:
        load_topology(args.topology)                      # bad file: one line, exit 2
        args.topology = str(Path(args.topology).resolve())
    for option in ("kernel", "modules", "keyword", "topology", "host_iface"):
        if getattr(args, option):
            argv += ["-k" if option == "keyword" else f"--{option.replace('_', '-')}",
                     getattr(args, option)]
    for option in ("append", "trtype", "paths", "iopolicy", "allow_missing", "family"):
        for value in getattr(args, option) or ():
            argv += [f"--{option.replace('_', '-')}", str(value)]
    for flag in ("expect_all_features", "loss", "tls"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    if args.vms > 1:
        argv += ["-n", str(args.vms)]
    print(f"results: {results}", file=sys.stderr)
    config_holder = {}

    class Capture:
        def pytest_unconfigure(self, config):
            config_holder["code"] = config.stash.get(KTAP_EXIT, None)

    status = pytest.main(argv + tests, plugins=[Capture()])
    code = config_holder.get("code")
    if code is None:
        return 2 if status == pytest.ExitCode.USAGE_ERROR else 1
    return code


SCRIPT_CHOICES = (("trtype", ("tcp", "mptcp"), "mptcp"), ("paths", ("1", "2", "3", "4"), "1"),
                  ("iopolicy", ("numa", "round-robin", "queue-depth"), "numa"),
                  ("loss", ("0", "1"), "0"))


def script_options(values):
    """mptcp_nvme.sh's positional arguments, validated as it does, as run options: an
    address family may come first (the newer script's), the fifth after it, whatever
    its value, turns TLS on."""
    values = list(values)
    family = values.pop(0) if values and values[0] in FAMILIES else "ipv4"
    if len(values) > len(SCRIPT_CHOICES) + 1:
        raise UsageError(f"script: too many arguments: {' '.join(values)} (usage: mptcp-nvme "
                         "script [ipv4|ipv6|v4map] [tcp|mptcp] [1..4] "
                         "[numa|round-robin|queue-depth] [0|1] [tls])")
    chosen = {"tls": len(values) > len(SCRIPT_CHOICES), "family": family}
    for (name, choices, default), value in zip(SCRIPT_CHOICES, [*values, *[None] * 4]):
        value = default if value is None else value
        if value not in choices:
            raise UsageError(f"script: bad {name} {value!r}: choose one of {'|'.join(choices)}")
        chosen[name] = value
    return chosen


def cmd_script(args):
    chosen = script_options(args.script_args)
    run_args = build_parser().parse_args(["run", str(SELFTESTS / "test_script.py")])
    for option in ("kernel", "modules", "rootfs", "accel", "results_dir", "host_iface",
                   "expect_all_features"):
        setattr(run_args, option, getattr(args, option))
    run_args.family = [chosen["family"]]
    run_args.trtype = [chosen["trtype"]]
    run_args.paths = [int(chosen["paths"])]
    run_args.iopolicy = [chosen["iopolicy"]]
    run_args.loss = chosen["loss"] == "1"
    run_args.tls = chosen["tls"]
    return cmd_run(run_args)


def cmd_build(args):
    kernel = kernel_mod.build(args.tree, debug=args.debug, jobs=args.jobs, trim=args.trim,
                              log=args.log)
    print(f"built {kernel.image} ({kernel.release})")
    return 0


def main(argv=None):
    def body():
        args = build_parser().parse_args(argv)
        commands = {"setup": cmd_setup, "run": cmd_run, "script": cmd_script, "build": cmd_build}
        return commands[args.command](args)
    return run_command("mptcp-nvme", body)


if __name__ == "__main__":
    sys.exit(main())
