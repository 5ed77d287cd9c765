"""``mptcp-nvme matrix``: the seed's results table, measured on a kernel (and a baseline).

Every cell is selftests/bench/bench_matrix.py's ``test_cell`` for one (trtype, paths,
iopolicy, loss), run --repeat times; pytest parametrizes them from the run options, the
VM runner runs them (over -n VMs), and this module picks which to run, records every
run in matrix.json as it ends (so that Ctrl-C keeps what was measured and --resume goes
on from there), shows progress, and writes matrix.md and matrix.png (report.py).
Beside the cells: the bare calibration cell (the same fio job from a plain shell) and the
raw cell (the fio job on the backing device, no fabric), --calibrate runs each.
"""

import datetime
import hashlib
import sys
from pathlib import Path

from tqdm import tqdm

from mptcp_nvme import SOURCE_DIR
from mptcp_nvme import options
from mptcp_nvme.payloads import Measurement
from mptcp_nvme.errors import UsageError
from mptcp_nvme import topology
from mptcp_nvme.host.inputs import kernel as kernel_mod
from mptcp_nvme.host.matrix import document, report as matrix_report
from mptcp_nvme.host.inputs import rootfs
from mptcp_nvme.host import suite
from mptcp_nvme.host.vm.qemu import require_host_tools

BENCH = suite.SELFTESTS / "bench" / "bench_matrix.py"
DEFAULT_RATE = "30mbit"       # 4 links of it (14.3 MiB/s) stay below what TCG here moves
KINDS = {"test_cell": "fabric", "test_bare": "bare", "test_raw": "raw"}
AXES = document.IDENTITY[2:-2]       # trtype, paths, multipath, iopolicy, loss


def axes(args):
    """The cells' axes, with the matrix's defaults: the seed table's."""
    return {
        "trtype": args.trtype or list(options.TRTYPES),
        "paths": args.paths or [topology.SCRIPT_LINKS],
        "multipath": args.multipath or ["native"],
        "iopolicy": args.iopolicy or list(options.IOPOLICIES),   # not offered: SKIP
        "dm_selector": args.dm_selector or list(options.DM_SELECTORS),
        "bond_mode": args.bond_mode or list(options.BOND_MODES),
        "loss": args.loss or [0, 1],
    }


def cell_links(trtype, paths, iopolicy, topology_file, rate, multipath="native", cpus=2):
    """(link rates in Mbit/s, links the cell can use): MPTCP spreads over every link
    with an endpoint; NVMe/TCP uses its connections' links, one with numa; a bond every
    slave in balance-rr, one in active-backup, and in the hashing modes as many as its
    connection has flows (its I/O queues, one per guest CPU of ``cpus``, and the admin
    queue)."""
    if topology_file:
        links = topology.scaled_to(topology.load_topology(topology_file), rate).links
    else:
        links = topology.script_topology(paths, rate=rate).links
    rates = [link.netem.rate_bit / 1e6 for link in links]
    if multipath == "bond":
        flows = {"balance-rr": len(rates), "active-backup": 1}.get(iopolicy, cpus + 1)
        return rates, min(len(rates), flows)
    usable = len(rates) if trtype == "mptcp" else 1 if iopolicy == "numa" else paths
    return rates, usable


def label(kind, params, tls, topology_file, sampled=True):
    """The script's arguments, as the seed table names its rows ('unsampled' after the
    twin measured without tcp_info sampling)."""
    if kind == "raw":
        return "raw"
    policy = params["iopolicy"]
    if params.get("multipath") in ("dm", "bond"):
        policy = f"{params['multipath']}:{policy}"
    text = f"{params['trtype']} {params['paths']} {policy} {int(params['loss'])}"
    text += " tls" if tls else ""
    text += f" ({Path(topology_file).name})" if topology_file else ""
    text += "" if sampled else " unsampled"
    return f"bare {text}" if kind == "bare" else text


def calibration_cells(cells):
    """One cell per transport to calibrate against the bare shell: the most paths,
    round-robin when measured, no loss when measured; native multipath (as the script)."""
    chosen = {}
    for cell in (c for c in cells if c.get("multipath", "native") == "native"):
        key = (cell["paths"], cell["iopolicy"] == "round-robin", not cell["loss"])
        if cell["trtype"] not in chosen or key > chosen[cell["trtype"]][0]:
            chosen[cell["trtype"]] = (key, cell)
    return [cell for _, cell in chosen.values()]


class Collected:
    """pytest plugin: the node ids and parameters of the collected items."""

    def __init__(self):
        self.items = []

    def pytest_collection_finish(self, session):
        self.items = [(item.nodeid, item.originalname, dict(item.callspec.params))
                      for item in session.items]


def collect(argv):
    collected = Collected()
    status, _ = suite.run([*argv, "--collect-only", str(BENCH)], plugins=[collected])
    if status not in (0, 5) or not collected.items:
        raise UsageError(f"matrix: collecting {BENCH.name} failed (pytest status {int(status)})")
    return collected.items


class Recorder:
    """pytest plugin in the host's pytest: each finished run goes into matrix.json at
    once, and the progress bar moves."""

    def __init__(self, doc, path, kernel, planned, bar):
        self.doc, self.path, self.kernel, self.planned, self.bar = doc, path, kernel, planned, bar

    def pytest_runtest_logstart(self, nodeid, location):
        self.bar.set_description(f"{self.kernel}: {nodeid.split('::')[-1]}")

    def pytest_runtest_logreport(self, report):
        cell = self.planned.get(report.nodeid)
        if cell is None or (report.when != "call" and report.passed):
            return             # a setup that passed: the call follows
        measured = Measurement.find(report.user_properties)
        status = ("passed" if report.passed and measured else
                  "skipped" if report.skipped else "failed")
        run = document.Run(nodeid=report.nodeid, repeat=cell["repeat"], status=status,
                           read_mib=measured and measured.read_mib,
                           write_mib=measured and measured.write_mib,
                           duration_s=round(report.duration, 2),
                           reason=None if status == "passed" else reason(report),
                           transport=measured and measured.transport,
                           link_bytes=measured and measured.link_bytes)
        document.add_run(find_cell(self.doc, cell["key"]), run)
        document.save(self.doc, self.path)
        if report.when != "teardown":
            self.bar.update(1)


def reason(report):
    """One line: why a run was skipped or failed."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2].removeprefix("Skipped: ")
    lines = report.longreprtext.strip().splitlines()
    return lines[-1] if lines else "passed without a measurement"


def find_cell(doc, key):
    for cell in doc["cells"]:
        if cell_key(cell) == key:
            return cell
    raise KeyError(key)


def cell_key(cell):
    return document.key(cell)


def kernel_info(kernel, root):
    """release, origin and the hash of the kernel's config (tree's .config or the
    rootfs's /boot/config-<release>)."""
    config = (kernel.tree / ".config") if kernel.tree else Path(root, "boot", f"config-{kernel.release}")
    try:
        digest = hashlib.sha256(config.read_bytes()).hexdigest()[:16]
    except OSError:
        digest = None
    return {"release": kernel.release, "origin": kernel.origin, "config_sha": digest}


def plan(items, doc, kernel, args, rate):
    """{nodeid: cell} of the runs still to measure on ``kernel``; adds the cells to doc."""
    fabric = [params for _, name, params in items if name == "test_cell"]
    calibrated = {axis_values(c) for c in calibration_cells(fabric)}
    planned = {}
    for nodeid, name, params in items:
        kind = KINDS[name]
        repeat = params["repeat"]
        if kind != "fabric" and repeat >= args.calibrate:
            continue
        if kind == "bare" and axis_values(params) not in calibrated:
            continue
        values = dict(zip(AXES, axis_values(params)))
        if kind == "raw":
            values.update(loss=0, multipath=None)
        sampled = params.get("sampled", True)
        key = (kernel, kind, *values.values(), bool(args.tls) if kind != "raw" else False,
               sampled)
        try:
            entry = find_cell(doc, key)
        except KeyError:
            rates, usable = (cell_links(values["trtype"], values["paths"], values["iopolicy"],
                                        args.topology, rate, values["multipath"], args.cpus)
                             if kind != "raw" else ([], 0))
            entry = document.add_cell(doc, document.Cell(
                kernel=kernel, kind=kind, **values, tls=key[-2], sampled=sampled,
                label=label(kind, values, args.tls, args.topology, sampled),
                links=len(rates), usable_links=usable, link_rate_mbit=rates, runs=[]))
        if any(r.get("nodeid") == nodeid and r["status"] != "failed" for r in entry["runs"]):
            continue               # measured (or skipped) in the run --resume continues
        planned[nodeid] = {"key": key, "repeat": repeat}
    return planned


def axis_values(params):
    """The AXES of a test's parameters: loss as 0|1, native multipath where the test has
    no multipath parameter (the bare cell, as the script)."""
    values = {a: params.get(a) for a in AXES}
    values["loss"] = int(values["loss"]) if values["loss"] is not None else None
    if values["multipath"] is None and values["trtype"] is not None:
        values["multipath"] = "native"
    return tuple(values.values())


def new_doc(args, rate):
    rate_bit = topology.Netem.parse(rate=rate).rate_bit
    # the guest's CPUs: one NVMe/TCP I/O queue (one TCP flow) each per controller
    note = topology.loss_profile(rate_bit, args.cpus)[1]
    return document.new(document.Settings(
        rate_mbit=rate_bit / 1e6, runtime_s=args.runtime, repeat=args.repeat,
        loss={"note": note}, topology=args.topology, tls=args.tls,
        append=[*(args.append or ()), *suite.io_timeout(args.append, rate)],
        loss_links=args.loss_links))


def resume(folder, args, rate):
    """matrix.json of an interrupted matrix, checked to be the same measurement."""
    doc = document.load(folder / "matrix.json")
    settings = doc["settings"]
    wanted = new_doc(args, rate)["settings"]
    for name in ("rate_mbit", "runtime_s", "topology", "tls", "loss_links"):
        if settings.get(name) != wanted[name]:
            raise UsageError(f"--resume {folder}: its cells were measured with {name} "
                             f"{settings.get(name)!r}, not {wanted[name]!r}")
    return doc


def run_matrix(args):
    """The body of 'mptcp-nvme matrix'."""
    rate = args.rate or DEFAULT_RATE
    if args.sampling_cost and args.no_transport_sampling:
        raise UsageError("--sampling-cost measures each cell with and without tcp_info "
                         "sampling: it cannot go with --no-transport-sampling")
    if args.resume:                   # a bad --resume is refused before anything is built
        folder = Path(args.resume)
        doc = resume(folder, args, rate)
    root = rootfs.ensure(args.rootfs)
    kernels = {"main": kernel_mod.locate(args.kernel, root, args.modules)}
    if args.baseline_kernel:
        kernels["baseline"] = kernel_mod.locate(args.baseline_kernel, root, args.modules)
    require_host_tools()
    if not args.resume:
        folder = Path(args.results_dir or SOURCE_DIR / "results" /
                      datetime.datetime.now().strftime("matrix-%Y%m%d-%H%M%S"))
        folder.mkdir(parents=True, exist_ok=True)
        doc = new_doc(args, rate)
    path = folder / "matrix.json"
    print(f"results: {folder}", file=sys.stderr)
    print(f"matrix: {doc['settings']['loss']['note']}", file=sys.stderr)
    scaled = suite.io_timeout(args.append, rate)      # pytest_argv appends it
    if scaled:
        print(f"matrix: {scaled[0]} (30 s scaled with the rate: the script's fio queue drains "
              "that much slower)", file=sys.stderr)
    chosen = options.values(args)
    chosen.update(axes(args), rate=rate, vms=chosen.get("vms") or 1,   # cells measure: one VM
                  rootfs="host" if root == Path("/") else str(root),
                  # a cell that has not ended long after its two fio jobs is stuck
                  test_timeout=min(args.test_timeout, 2 * args.runtime + 180))
    interrupted = False
    for name, kernel in kernels.items():
        doc["kernels"][name] = kernel_info(kernel, root)
        chosen["kernel"] = args.kernel if name == "main" else args.baseline_kernel
        results = folder / name
        results.mkdir(exist_ok=True)
        argv = suite.pytest_argv(chosen, results, ktap=results / "ktap.txt")
        planned = plan(collect(argv), doc, name, args, rate)
        document.save(doc, path)
        if not planned:
            continue
        with tqdm(total=len(planned), unit="run", file=sys.stderr, dynamic_ncols=True) as bar:
            recorder = Recorder(doc, path, name, planned, bar)
            status, _ = suite.run([*argv, *planned], plugins=[recorder])
        if int(status) == 2:          # pytest.ExitCode.INTERRUPTED: keep what was measured
            interrupted = True
            break
    md, png = matrix_report.write_outputs(doc, folder)
    print(md.read_text())
    print(f"matrix: {path}, {md}, {png}", file=sys.stderr)
    if interrupted:
        print(f"matrix: interrupted; go on with --resume {folder}", file=sys.stderr)
        return 130
    failed = [c["label"] for c in doc["cells"] for r in c["runs"] if r["status"] == "failed"]
    return 1 if failed else 0
