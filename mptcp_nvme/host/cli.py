"""The ``mptcp-nvme`` command: setup, run, kselftest, blktests, script, matrix, report,
merge, build, series."""

import argparse
import datetime
import signal
import sys
from pathlib import Path

from mptcp_nvme import SOURCE_DIR
from mptcp_nvme.host.inputs import kernel as kernel_mod
from mptcp_nvme.host.results import merge as merge_mod
from mptcp_nvme.host import kselftest, order, suite
from mptcp_nvme.host.inputs import rootfs
from mptcp_nvme import options
from mptcp_nvme.errors import ArgumentParser, UsageError, run_command
from mptcp_nvme.options import FAMILIES
from mptcp_nvme.host.vm.qemu import require_host_tools, resolve_accel
from mptcp_nvme.vocabulary import SCRIPT_IOPOLICIES, TRTYPES

SELFTESTS = suite.SELFTESTS


def build_parser():
    """The parsers; run, script and setup options come from options.OPTIONS."""
    parser = ArgumentParser(prog="mptcp-nvme", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    setup = sub.add_parser("setup", help="build the guest rootfs and probe KVM (cached)")
    options.add_arguments(setup, "setup")

    run = sub.add_parser("run", help="boot the kernel and run the selftests, KTAP on stdout")
    run.add_argument("tests", nargs="*", help="selftest files or node ids (default: all)")
    run.add_argument("-k", dest="keyword", help="pytest -k expression")
    options.add_arguments(run, "run")

    kselftest = sub.add_parser("kselftest", help="the --kernel tree's own kselftests, e.g. "
                               "net/mptcp:pm_netlink.sh, in the suite's VM: KTAP on stdout "
                               "(takes run's options)")
    kselftest.add_argument("selections", nargs="+", metavar="COLLECTION[:TEST]")
    kselftest.add_argument("-k", dest="keyword", help="pytest -k expression")
    options.add_arguments(kselftest, "run")

    blk = sub.add_parser("blktests", help="a blktests checkout's tests (default: the nvme "
                         "group) in the suite's VM, each a result beside the selftests "
                         "(takes run's options)")
    blk.add_argument("tests", nargs="*", metavar="TEST", help="group or group/NNN "
                     "(default: nvme)")
    blk.add_argument("--blktests", required=True, metavar="DIR",
                     help="the blktests checkout (built with make where its tests need it)")
    blk.add_argument("-k", dest="keyword", help="pytest -k expression")
    options.add_blktests_arguments(blk)

    script = sub.add_parser("script", help="mptcp_nvme.sh's scenario with its arguments",
                            usage="mptcp-nvme script [ipv4|ipv6|v4map] [tcp|mptcp] [1..4] "
                                  "[numa|round-robin|queue-depth] [0|1] [tls] [options]")
    script.add_argument("script_args", nargs="*", metavar="ARG")
    options.add_arguments(script, "script")

    matrix = sub.add_parser("matrix", help="the seed's results table: the script scenario "
                            "for every trtype x paths x iopolicy x loss, repeated; medians, "
                            "matrix.json/.md/.png, optionally against a baseline kernel")
    options.add_arguments(matrix, "matrix")

    merge = sub.add_parser("merge", help="the results folders of shards (--shard I/N) as one "
                           "run: KTAP on stdout, results.json, junit.xml, summary.md")
    merge.add_argument("folders", nargs="+", metavar="DIR", help="results folders of 'run'")
    options.add_arguments(merge, "merge")

    answer = sub.add_parser("report", help="the reviewers' questions answered from matrix "
                            "and fault results folders: report.md and report.html")
    answer.add_argument("folders", nargs="+", metavar="DIR",
                        help="results folders of 'matrix' (matrix.json) or of the fault "
                             "cases (faults.json)")
    answer.add_argument("--out", metavar="DIR", help="where report.md and report.html go "
                        "(default: results/report-<time>)")

    series = sub.add_parser("series", help="a patch series against its base: build both "
                            "(incrementally, cached), run the same selftests on each, and say "
                            "what changed: summary.md, results.json, junit.xml, kcidb.json")
    series.add_argument("series", metavar="SERIES",
                        help="an mbox file, a message id (b4), or a git range A..B of TREE")
    series.add_argument("tests", nargs="*", help="selftest files or node ids (default: all)")
    series.add_argument("--base", required=True, metavar="TREE",
                        help="the git kernel work tree the series applies to (its HEAD; "
                             "for a range A..B, A)")
    series.add_argument("--local-mbox", metavar="FILE",
                        help="with a message id: b4 takes the thread from this mbox, offline")
    series.add_argument("-k", dest="keyword", help="pytest -k expression")
    series.add_argument("-j", "--jobs", type=int, help="make jobs of the builds")
    options.add_arguments(series, "series")

    patchwork = sub.add_parser("patchwork", help="a CI bot on patchwork: new series in, "
                               "checks and results pages out (README: patchwork CI bot)")
    verbs = patchwork.add_subparsers(dest="verb", required=True, parser_class=ArgumentParser)
    for verb, text in (("poll", "one pass: new series since the saved cursor, each run"),
                       ("serve", "poll every --interval seconds until stopped"),
                       ("run", "one series end to end: pending, run, final checks")):
        action = verbs.add_parser(verb, help=text)
        action.add_argument("--config", required=True, metavar="FILE", help="the bot's TOML file")
        if verb == "serve":
            action.add_argument("--interval", type=int, default=120, metavar="S",
                                help="seconds between passes (default 120)")
        if verb == "run":
            action.add_argument("series_id", type=int, metavar="SERIES_ID")

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


def cmd_run(args, selftests=True):
    """``run`` (``selftests``: the selftest files, all by default) and ``kselftest``."""
    if args.kselftest:                                      # bad selection: fail first
        tree, kselftests = kselftest.resolve(args.kernel, args.kselftest)
    root = rootfs.ensure(args.rootfs)
    kernel_mod.locate(args.kernel, root, args.modules)      # bad --kernel: fail before pytest
    tests = suite.test_paths(args.tests) if selftests else []
    require_host_tools()
    results = Path(args.results_dir or SOURCE_DIR / "results" /
                   datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    results.mkdir(parents=True, exist_ok=True)
    chosen = options.values(args)
    chosen.update(rootfs="host" if root == Path("/") else str(root))
    print(f"results: {results}", file=sys.stderr)
    if args.kselftest:
        tests += kselftest.install(tree, kselftests, results)
    if getattr(args, "blktests_tests", None):
        from mptcp_nvme.host import blktests
        tests += blktests.install(args.blktests_checkout, args.blktests_tests, results)
    status, code = suite.run(suite.pytest_argv(chosen, results, keyword=args.keyword,
                                                  tests=tests) + tests)
    if (results / "results.json").is_file():
        from mptcp_nvme.host.results import summary
        document = merge_mod.read_run(results)[1]
        order.remember(document["tests"])         # the next run's longest-first order
        (results / "summary.md").write_text(summary.markdown(document))   # and where time went
    if code is None:
        import pytest
        return 2 if status == pytest.ExitCode.USAGE_ERROR else 1
    if args.kcidb:
        from mptcp_nvme.host.results import kcidb
        kcidb.write(args.kcidb, [merge_mod.read_run(results)[1]])
    return code


def cmd_report(args):
    from mptcp_nvme.host.matrix import questions
    out = Path(args.out or SOURCE_DIR / "results" /
               datetime.datetime.now().strftime("report-%Y%m%d-%H%M%S"))
    md, page = questions.write(args.folders, out)
    sys.stdout.write(md.read_text())
    print(f"report: {md}, {page}", file=sys.stderr)
    return 0


def cmd_merge(args):
    out = Path(args.results_dir or SOURCE_DIR / "results" /
               datetime.datetime.now().strftime("%Y%m%d-%H%M%S-merged"))
    document, text, code = merge_mod.merge(args.folders, out, args.ktap_version)
    sys.stdout.write(text)
    print(f"results: {out}", file=sys.stderr)
    if args.kcidb:
        from mptcp_nvme.host.results import kcidb
        kcidb.write(args.kcidb, [document])
    return code


SCRIPT_CHOICES = (("trtype", TRTYPES, "mptcp"), ("paths", ("1", "2", "3", "4"), "1"),
                  ("iopolicy", SCRIPT_IOPOLICIES, "numa"),
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
    run_args = argparse.Namespace(command="run", tests=[str(SELFTESTS / "test_script.py")],
                                  keyword=None, **options.defaults("run"))
    for option in options.OPTIONS:
        if "script" in option.commands:
            setattr(run_args, option.name, getattr(args, option.name))
    run_args.family = [chosen["family"]]
    run_args.trtype = [chosen["trtype"]]
    run_args.paths = [int(chosen["paths"])]
    run_args.iopolicy = [chosen["iopolicy"]]
    run_args.loss = [int(chosen["loss"])]
    run_args.tls = chosen["tls"]
    run_args.vms = args.vms if getattr(args, "vms", None) else 1    # the scenario is one test
    return cmd_run(run_args)


def cmd_kselftest(args):
    args.kselftest = [*args.selections, *(args.kselftest or ())]
    args.vms = getattr(args, "vms", None) or 1        # no -n here: one VM, as before
    return cmd_run(args, selftests=False)


def cmd_blktests(args):
    """``blktests``: the checkout and its tests checked, then run like ``run``'s items."""
    from mptcp_nvme.host import blktests
    blktests.check_trtype(args.blktests_trtype)
    checkout = blktests.check_checkout(args.blktests)
    args.blktests_tests = blktests.resolve(checkout, args.tests)
    args.blktests_checkout = checkout
    args.tests, args.trtype, args.kselftest = [], None, None
    args.vms = getattr(args, "vms", None) or 1        # blktests' tests share the VM's nvmet
    return cmd_run(args, selftests=False)


def cmd_matrix(args):
    from mptcp_nvme.host.matrix.run import run_matrix
    return run_matrix(args)


def cmd_build(args):
    kernel = kernel_mod.build(args.tree, debug=args.debug, jobs=args.jobs, trim=args.trim,
                              log=args.log)
    print(f"built {kernel.image} ({kernel.release})")
    return 0


def cmd_series(args):
    from mptcp_nvme.host.series import patches
    from mptcp_nvme.host.series.judge import judge
    tests = suite.test_paths(args.tests)             # bad input: exit 2 before any build
    out = Path(args.results_dir or SOURCE_DIR / "results" /
               datetime.datetime.now().strftime("%Y%m%d-%H%M%S-series"))
    series = patches.resolve(args.series, args.base, out / "input", args.local_mbox)
    chosen = {k: v for k, v in options.values(args).items() if k != "results_dir"}
    selection = [*tests, *(["-k", args.keyword] if args.keyword else []),
                 *options.to_argv(chosen, only=lambda o: "series" in o.commands)]
    print(f"results: {out}", file=sys.stderr)
    verdict = judge(series, out, selection, args.jobs)
    sys.stdout.write((out / "summary.md").read_text())
    return verdict["exit"]


def cmd_patchwork(args):
    from mptcp_nvme.host.patchwork import bot, config
    from mptcp_nvme.host.patchwork.state import State
    chosen = config.load(args.config)                 # bad config: exit 2, nothing runs
    with State(chosen.state_path) as state:
        runner = bot.make(chosen, state=state)
        if args.verb == "poll":
            runner.poll()
        elif args.verb == "serve":
            bot.serve(runner, args.interval)
        else:
            runner.run(args.series_id)
    return 0


def parse(argv=None):
    """The command line; for 'series', test paths may also follow its options
    (``series SERIES --base TREE selftests/x.py``: argparse takes one run of positionals)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "series" and not any(e.startswith("-") for e in extra):
        args.tests += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv=None):
    # SIGTERM (timeout(1), a CI job cancelled) and SIGINT, even when the shell started
    # us in the background with SIGINT ignored, go the way of Ctrl-C: the VMs are
    # stopped and what was measured is kept.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)

    def body():
        args = parse(argv)
        commands = {"setup": cmd_setup, "run": cmd_run, "script": cmd_script, "build": cmd_build,
                    "matrix": cmd_matrix, "merge": cmd_merge, "kselftest": cmd_kselftest,
                    "blktests": cmd_blktests, "report": cmd_report,
                    "series": cmd_series, "patchwork": cmd_patchwork}
        return commands[args.command](args)
    return run_command("mptcp-nvme", body)


if __name__ == "__main__":
    sys.exit(main())
