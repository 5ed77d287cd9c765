"""Host side: what a developer reads when the guest crashed or hung during a test.

The console lines since the test started are searched for kernel crash reports
(crash.extract); the KTAP diagnostic starts with each one's kind, headline, function,
task/CPU and fingerprint, then its call trace, never an arbitrary tail. The console
lines and each crash block are kept as artifacts; with a built tree's vmlinux the block
is decoded to file:line (the tree's scripts/decode_stacktrace.sh) as well.
"""

import dataclasses
import re
from pathlib import Path

from mptcp_nvme import crash, proc
from mptcp_nvme.channel import artifact_dir

TAIL_LINES = 30           # console lines shown when no crash report was found
SYSRQ_LINES = 40          # lines of sysrq w/l output shown for a hang
DECODE_TIMEOUT = 120


@dataclasses.dataclass
class GuestFailure:
    text: str                           # the failure text (KTAP diagnostic, JUnit message)
    crashes: list                       # crash.Crash
    artifacts: list                     # paths written


def sysrq_excerpt(lines):
    """What sysrq w/l printed (blocked tasks, CPU backtraces), from its first header."""
    for index, line in enumerate(lines):
        if re.search(r"sysrq: (Show Blocked State|Show backtrace of all active CPUs)", line):
            return lines[index:index + SYSRQ_LINES]
    return []


def decode(block_lines, tree):
    """``block_lines`` decoded to file:line by the tree's decode_stacktrace.sh, or None."""
    tree = Path(tree)
    script, vmlinux = tree / "scripts/decode_stacktrace.sh", tree / "vmlinux"
    if not (script.is_file() and vmlinux.is_file()):
        return None
    try:
        done = proc.cmd(["bash", script, vmlinux, tree, tree], input="\n".join(block_lines) + "\n",
                        timeout=DECODE_TIMEOUT)
    except proc.CmdExitFailure:
        return None
    return done.stdout if done.stdout.strip() else None


def guest_failure(headline, console_lines, results, nodeid, tree=None, hung=False):
    """The report of a test during which the guest died (or hung: ``hung``), from the
    console lines since the test started."""
    found = crash.extract("\n".join(console_lines))
    folder = artifact_dir(results, nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "console.txt"]
    written[0].write_text("\n".join(console_lines) + "\n")
    parts = [headline]
    for number, block in enumerate(found, start=1):
        parts.append(block.describe())
        path = folder / f"crash-{number}-{block.kind}.txt"
        text = "\n".join(block.lines) + "\n"
        decoded = decode(block.lines, tree) if tree else None
        if decoded:
            text += "\n--- decoded (scripts/decode_stacktrace.sh) ---\n" + decoded
        path.write_text(text)
        written.append(path)
    if hung and (excerpt := sysrq_excerpt(console_lines)):
        parts.append("sysrq w/l before the guest was stopped:\n" + "\n".join(excerpt))
    if not found and not (hung and sysrq_excerpt(console_lines)):
        parts.append("no kernel crash report on the console; its last lines:\n"
                     + "\n".join(console_lines[-TAIL_LINES:]))
    parts.append(f"console since the test started: {written[0]}")
    return GuestFailure("\n".join(parts), found, [str(p) for p in written])
