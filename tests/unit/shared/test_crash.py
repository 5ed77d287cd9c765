"""mptcp_nvme.crash on real console logs (tests/data/console/): the captured ones from this
suite's guests (sysrq-c on Debian's 7.3 kernel, lkdtm on the 7.3 test kernel) and
excerpts of upstream reports (syzkaller, netdev NIPA) for the kinds that cannot be
provoked here; plus a fuzz of cut-up, interleaved and garbled logs."""

import random
import re

import pytest

from mptcp_nvme import crash
import tests

DATA = tests.DATA / "console"
LOGS = sorted(DATA.glob("*.log"))
CAPTURED = [p for p in LOGS if not p.name.startswith("upstream-")]


def extract(name):
    return crash.extract((DATA / name).read_text())


# file: [(kind, headline, function, task, cpu)] of every block, in order
EXPECTED = {
    "sysrq-panic-debian-7.3-run1.log": [
        ("panic", "Kernel panic - not syncing: sysrq triggered crash", "sysrq_handle_crash",
         "python3", 0)],
    "sysrq-panic-debian-7.3-run2.log": [
        ("panic", "Kernel panic - not syncing: sysrq triggered crash", "sysrq_handle_crash",
         "python3", 1)],
    "lkdtm-warning-bug-7.3-run1.log": [
        ("warning", "WARNING: drivers/misc/lkdtm/bugs.c:164 at lkdtm_WARNING+0x18/0x20 [lkdtm], "
                    "CPU#0: python3/108", "lkdtm_WARNING", "python3", 0),
        ("bug", "kernel BUG at drivers/misc/lkdtm/bugs.c:132!", "lkdtm_BUG", "python3", 0)],
    "lkdtm-warning-bug-7.3-run2.log": [
        ("warning", "WARNING: drivers/misc/lkdtm/bugs.c:164 at lkdtm_WARNING+0x18/0x20 [lkdtm], "
                    "CPU#1: python3/107", "lkdtm_WARNING", "python3", 1),
        ("bug", "kernel BUG at drivers/misc/lkdtm/bugs.c:132!", "lkdtm_BUG", "python3", 0)],
    "lkdtm-exception-oops-panic-7.3.log": [
        ("oops", "BUG: kernel NULL pointer dereference, address: 0000000000000000",
         "lkdtm_EXCEPTION", "python3", 0),
        ("panic", "Kernel panic - not syncing: Fatal exception", "lkdtm_EXCEPTION", "python3", 0)],
    "upstream-kasan-mptcp-panic-syzkaller.log": [
        ("kasan", "BUG: KASAN: slab-use-after-free in lock_timer_base+0x1d9/0x220",
         "lock_timer_base", "kworker/0:4", 0),
        ("panic", "Kernel panic - not syncing: KASAN: panic_on_warn set ...", "lock_timer_base",
         "kworker/0:4", 0)],
    "upstream-kfence-kunit-syzkaller.log": [
        ("kfence", "BUG: KFENCE: use-after-free read in test_use_after_free_read+0xb3/0x143",
         "test_use_after_free_read", "kunit_try_catch", 5)],
    "upstream-ubsan-syzkaller.log": [
        ("ubsan", "UBSAN: array-index-out-of-bounds in "
                  "/usr/local/google/home/dvyukov/src/linux2/arch/x86/kernel/uprobes.c:263:56",
         "arch_uprobe_analyze_insn", "syz-executor.3", 2)],
    "upstream-lockdep-wireguard-syzkaller.log": [
        ("lockdep", "WARNING: possible circular locking dependency detected", "flush_workqueue",
         "syz-executor.5", 0)],
    "upstream-rcu-stall-syzkaller.log": [
        ("rcu_stall", "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", "vprintk_emit",
         "syz-executor", None)],
    "upstream-hung-task-nipa.log": [
        ("hung_task", "INFO: task tc:9091 blocked for more than 122 seconds.", "d_alloc_parallel",
         "tc", None),
        ("hung_task", "INFO: task jq:9092 blocked for more than 122 seconds.",
         "__wait_on_freeing_inode", "jq", None),
        ("hung_task", "INFO: task tc:9091 blocked for more than 245 seconds.", "d_alloc_parallel",
         "tc", None),
        ("hung_task", "INFO: task jq:9092 blocked for more than 245 seconds.",
         "__wait_on_freeing_inode", "jq", None)],
    "upstream-kmemleak-nipa.log": [
        ("kmemleak", "unreferenced object 0xffff888003692380 (size 128):", "tcp_ao_alloc_info",
         "unsigned-md5_ip", None)],
    "upstream-kmemleak-symbolized-syzkaller.log": [
        ("kmemleak", "unreferenced object 0xffff8882d78c9ea0 (size 96):",
         "lookup_or_create_module_kobject", "syz.0.23", None)],
}


def test_every_data_file_has_expectations():
    assert sorted(EXPECTED) == [p.name for p in LOGS]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_blocks_of_real_logs(name):
    found = extract(name)
    assert [(c.kind, c.headline, c.function, c.task, c.cpu) for c in found] == EXPECTED[name]
    for block in found:
        assert block.kind in crash.KINDS
        assert block.lines and block.headline in block.lines[0]
        assert re.fullmatch(r"\w+:[\w<-]+", block.fingerprint), block.fingerprint
        assert block.summary() == (f"{block.kind}: {block.headline} in {block.function} "
                                   f"(fingerprint {block.fingerprint})")
        if "Fatal exception" not in block.headline:
            assert block.trace and all(re.fullmatch(r"\w[\w.$]*\+0x\w+/0x\w+( \[\w+\])?", frame)
                                       for frame in block.trace), block.trace


def test_panic_trace_is_the_call_trace_without_unreliable_frames():
    [panic] = extract("sysrq-panic-debian-7.3-run1.log")
    assert panic.trace[:5] == ("dump_stack_lvl+0x5d/0x80", "vpanic+0x166/0x360", "panic+0x6b/0x70",
                               "sysrq_handle_crash+0x1a/0x20", "__handle_sysrq.cold+0x91/0x141")
    assert panic.trace[-1] == "entry_SYSCALL_64_after_hwframe+0x76/0x7e"
    assert not any(frame.startswith("?") for frame in panic.trace)
    assert panic.lines[0] == "[   17.886255] Kernel panic - not syncing: sysrq triggered crash"
    assert panic.lines[-1].endswith("Kernel Offset: 0x22800000 from 0xffffffff81000000 "
                                    "(relocation range: 0xffffffff80000000-0xffffffffbfffffff)")


def test_describe_is_what_a_developer_reads_first():
    [panic] = extract("sysrq-panic-debian-7.3-run1.log")
    assert panic.describe().splitlines()[:5] == [
        "panic: Kernel panic - not syncing: sysrq triggered crash",
        "  at sysrq_handle_crash (task python3, CPU 0)",
        "  fingerprint panic:sysrq_handle_crash<-__handle_sysrq<-write_sysrq_trigger"
        "<-proc_reg_write<-vfs_write",
        "  Call Trace:",
        "    dump_stack_lvl+0x5d/0x80"]
    assert panic.describe(frames=2).splitlines()[-1] == "    ... 9 more frames"


def test_module_frames_keep_their_module():
    warning = extract("lkdtm-warning-bug-7.3-run1.log")[0]
    assert warning.trace[:2] == ("lkdtm_do_action+0x18/0x30 [lkdtm]",
                                 "direct_entry+0x8d/0xe0 [lkdtm]")
    assert warning.lines[-1].endswith("---[ end trace 0000000000000000 ]---")


@pytest.mark.parametrize("run1, run2", [
    ("sysrq-panic-debian-7.3-run1.log", "sysrq-panic-debian-7.3-run2.log"),
    ("lkdtm-warning-bug-7.3-run1.log", "lkdtm-warning-bug-7.3-run2.log")])
def test_fingerprints_are_stable_across_runs(run1, run2):
    first, second = extract(run1), extract(run2)
    assert [c.fingerprint for c in first] == [c.fingerprint for c in second]
    assert first[0].lines != second[0].lines            # different runs indeed (CPU, PID, time)


def test_fingerprints_as_observed():
    assert extract("sysrq-panic-debian-7.3-run1.log")[0].fingerprint == (
        "panic:sysrq_handle_crash<-__handle_sysrq<-write_sysrq_trigger<-proc_reg_write<-vfs_write")
    warning, bug = extract("lkdtm-warning-bug-7.3-run1.log")
    assert warning.fingerprint == (
        "warning:lkdtm_WARNING<-lkdtm_do_action<-direct_entry<-full_proxy_write<-vfs_write")
    assert bug.fingerprint == (
        "bug:lkdtm_BUG<-lkdtm_do_action<-direct_entry<-full_proxy_write<-vfs_write")


def test_fingerprints_differ_across_crashes():
    blocks = [c for path in LOGS if "run2" not in path.name
              for c in crash.extract(path.read_text())]
    hung = [c for c in blocks if c.kind == "hung_task"]
    assert hung[0].fingerprint == hung[2].fingerprint != hung[1].fingerprint == hung[3].fingerprint
    others = [c.fingerprint for c in blocks if c not in hung[2:]]
    assert len(set(others)) == len(others), others


def test_panic_after_an_oops_takes_its_frames():
    oops, panic = extract("lkdtm-exception-oops-panic-7.3.log")
    assert oops.lines[4].endswith("] Oops: Oops: 0002 [#1] SMP NOPTI")   # in its BUG block
    assert panic.trace == () and panic.lines[0].endswith("Fatal exception")
    assert panic.fingerprint == "panic:" + oops.fingerprint.partition(":")[2]


def test_panic_with_its_own_trace_after_a_kasan_report():
    kasan, panic = extract("upstream-kasan-mptcp-panic-syzkaller.log")
    assert "SYZFAIL: failed to recv rpc" in kasan.lines          # user space, kept as logged
    assert "tcp_rcv_established+0x7df/0x20d0" in kasan.trace      # ... and skipped over
    assert kasan.trace[-1] == "ret_from_fork_asm+0x1a/0x30"
    assert kasan.lines[-1].endswith("=" * 66)
    assert panic.trace[:2] == ("dump_stack_lvl+0x3d/0x1f0", "panic+0x71d/0x800")
    assert panic.fingerprint.partition(":")[2] == kasan.fingerprint.partition(":")[2]


def test_lockdep_trace_is_the_stack_backtrace_not_the_chain():
    [lockdep] = extract("upstream-lockdep-wireguard-syzkaller.log")
    assert lockdep.trace[0].startswith("dump_stack+")
    assert "flush_workqueue+0x115/0x1520" in lockdep.trace
    assert not any(f.startswith("wg_noise_handshake_create_initiation") for f in lockdep.trace)


def test_no_crash_in_a_clean_boot():
    text = (DATA / "sysrq-panic-debian-7.3-run1.log").read_text()
    boot = text[:text.index("sysrq: Trigger a crash")]
    assert "virtme-ng-init: WARNING: failed to run" in boot
    assert crash.extract(boot) == []


def strip_stamps(text):
    return re.sub(r"(?m)^\[\s*\d+\.\d+\] ", "", text)


@pytest.mark.parametrize("name", [p.name for p in CAPTURED])
@pytest.mark.parametrize("transform", [
    strip_stamps,                                                          # dmesg -t
    lambda text: re.sub(r"(?m)^\[", "<4>[", text),                         # syslog level
    lambda text: re.sub(r"(?m)^\[", "kern  :warn  : [", text),             # dmesg -x
    lambda text: text.replace("\n", "\r\n"),
    lambda text: text.encode()])
def test_log_formats_give_the_same_blocks(name, transform):
    text = (DATA / name).read_text()
    expected = [(c.kind, c.headline, c.function, c.task, c.cpu, c.trace, c.fingerprint)
                for c in crash.extract(text)]
    assert [(c.kind, c.headline, c.function, c.task, c.cpu, c.trace, c.fingerprint)
            for c in crash.extract(transform(text))] == expected


def test_fingerprint_strips_offsets_modules_suffixes_and_machinery():
    frames = ["dump_stack_lvl+0x5d/0x80", "? __pfx_noop+0x10/0x10", "vpanic+0x166/0x360",
              "sysrq_handle_crash+0x1a/0x20", "__handle_sysrq.cold+0x91/0x141 [sysrq]",
              "[<ffffffffb3dee5e4>] write_sysrq_trigger.constprop.0+0x59/0xb0"]
    assert crash.fingerprint("panic", frames) == (
        "panic:sysrq_handle_crash<-__handle_sysrq<-write_sysrq_trigger")
    assert crash.fingerprint("warning", ["a", "b", "c", "d", "e", "f"]) == "warning:a<-b<-c<-d<-e"
    assert crash.fingerprint("kmemleak", ["kmalloc_trace_noprof+0x1/0x2", "foo+0x1/0x2"]) == (
        "kmemleak:foo")
    assert crash.fingerprint("bug", []) == "bug:?"


@pytest.mark.parametrize("text", ["", None, b"", "\x00\xff garbage",
                                  "Kernel panic - not syncing: x"])
def test_degenerate_input(text):
    found = crash.extract(text)
    assert isinstance(found, list)
    if text and "panic" in text:
        assert found[0].fingerprint == "panic:Kernel_panic_not_syncing_x"


def mutate(rng, logs):
    """A cut-up real log: truncated, lines dropped or duplicated, two logs interleaved,
    lines cut, random bytes and junk lines."""
    lines = rng.choice(logs).splitlines()
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(7)
        if how == 0 and lines:                  # truncate
            lines = lines[:rng.randrange(len(lines) + 1)]
        elif how == 1:                          # drop lines
            lines = [line for line in lines if rng.random() > 0.2]
        elif how == 2:                          # duplicate lines
            lines = [dup for line in lines for dup in [line] * rng.choice((1, 1, 1, 2, 3))]
        elif how == 3:                          # interleave another log's lines
            other, merged, i, j = rng.choice(logs).splitlines(), [], 0, 0
            while i < len(lines) or j < len(other):
                if j == len(other) or (i < len(lines) and rng.random() < 0.5):
                    merged, i = merged + [lines[i]], i + 1
                else:
                    merged, j = merged + [other[j]], j + 1
            lines = merged
        elif how == 4 and lines:                # cut lines in the middle
            lines = [line[:rng.randrange(len(line) + 1)] if rng.random() < 0.1 else line
                     for line in lines]
        elif how == 5:                          # random bytes
            for _ in range(rng.randint(1, 20)):
                junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
                lines.insert(rng.randrange(len(lines) + 1), junk.decode("latin-1"))
        else:                                   # kernel-looking junk
            lines.insert(rng.randrange(len(lines) + 1), rng.choice((
                "[   1.000000] Call Trace:", "[   1.000000] ---[ end trace 0 ]---", "</TASK>",
                "[   1.000000] Oops: 0000 [#1]", "[   1.000000] RIP: 0010:", "==========",
                "[   1.000000]  ? +0x1/0x2", "[   1.000000] CPU: 99999999999999999999 PID: x",
                "[   1.000000] WARNING: CPU: 0 PID: 1 at x", "unreferenced object 0x1 (size 1):",
                "[   1.000000] Kernel panic - not syncing: ")))
    text = "\n".join(lines)
    return text.encode() if rng.random() < 0.1 else text


def test_fuzz_cut_up_real_logs_never_raise():
    rng = random.Random(20261129)
    logs = [p.read_text() for p in LOGS]
    for _ in range(400):
        found = crash.extract(mutate(rng, logs))
        assert isinstance(found, list)
        for block in found:
            assert isinstance(block, crash.Crash) and block.kind in crash.KINDS
            assert isinstance(block.headline, str) and block.lines
            assert block.cpu is None or isinstance(block.cpu, int)
            assert all(isinstance(frame, str) for frame in block.trace)
            assert re.fullmatch(r"\w+:\S+", block.fingerprint), block.fingerprint
            assert isinstance(block.summary(), str) and isinstance(block.describe(), str)
