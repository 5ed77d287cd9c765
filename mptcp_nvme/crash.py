"""Kernel crash reports in a console log or dmesg text, as data (pure functions).

``extract(text)`` returns every Oops, BUG, WARNING, panic, KASAN/KFENCE/UBSAN report,
lockdep splat, RCU stall, hung task and kmemleak report, in order of appearance, and
never raises: a truncated, interleaved or garbled log gives what can be read of it.

A block starts at the kernel's own headline ("Kernel panic - not syncing: ...",
"WARNING: <file>:<line> at <func>+0x..", "BUG: KASAN: ...", "INFO: task x:12 blocked
for more than ...", "unreferenced object 0x...", ...) and ends at its end marker
("---[ end trace", "---[ end Kernel panic", the closing "=====" of KASAN/KFENCE/UBSAN),
for reports without one (lockdep, RCU stall, hung task, kmemleak) at the end of their
call trace, else at the next headline or after MAX_LINES lines. An "Oops:" line right
after a "BUG: ..." or "kernel BUG at" headline belongs to that block. In a log with
console time stamps only time-stamped lines open blocks (user space's "WARNING: ..."
on the same console does not), kmemleak's debugfs output excepted.

The fingerprint is readable, in the style of netdev's NIPA: the kind, then the top
FRAMES function names of the call trace, innermost first, joined by "<-", e.g.
"panic:sysrq_handle_crash<-__handle_sysrq<-write_sysrq_trigger<-proc_reg_write<-vfs_write".
Offsets, addresses, modules, "? " frames and compiler suffixes (.cold, .constprop.0,
.isra.0, .part.0) are dropped, and so are the leading frames of the reporting machinery
(dump_stack, panic, __warn, kasan_report, __schedule, lockdep, kmalloc for kmemleak),
so it stays the same across runs and builds of the same bug. The faulting function (a
WARNING's "at func", the RIP of an Oops) leads when the trace does not start with it.
A panic without a trace of its own (an Oops' "Fatal exception") takes the frames,
function, task and CPU of the report just before it. A report without any frame is
fingerprinted by its headline with the numbers taken out.
"""

import dataclasses
import re

KINDS = ("panic", "oops", "bug", "warning", "kasan", "kfence", "ubsan", "lockdep",
         "rcu_stall", "hung_task", "kmemleak")
FRAMES = 5              # function names in a fingerprint
MAX_LINES = 500         # a block without an end marker stops here
INHERIT_LINES = 40      # a trace-less panic this close after a report continues it

HEADLINES = [(kind, re.compile(pattern)) for kind, pattern in (
    ("panic", r"Kernel panic - not syncing: "),
    ("kasan", r"BUG: KASAN: "),
    ("kfence", r"BUG: KFENCE: "),
    ("ubsan", r"UBSAN: \S"),
    ("lockdep", r"WARNING: (possible (circular|recursive) locking|inconsistent lock state|"
                r"possible irq lock inversion|\w+-safe -> \w+-unsafe lock order|suspicious RCU|"
                r"bad unlock balance|lock held when returning|held lock freed|[Nn]ested lock was "
                r"not taken|bad contention)|BUG: (held lock freed|MAX_LOCKDEP)"),
    ("rcu_stall", r"(rcu: )?INFO: rcu_\w+ (self-)?detected (expedited )?stall"),
    ("hung_task", r"INFO: task .+:\d+ blocked for more than \d+ seconds"),
    ("kmemleak", r"unreferenced object 0x[0-9a-f]+ \(size \d+\):"),
    ("warning", r"WARNING: (CPU: \d+ PID: \d+ )?(\S+:\d+ )?at "),
    ("oops", r"BUG: (kernel NULL pointer dereference|unable to handle)|Unable to handle kernel|"
             r"general protection fault|Oops: |Internal error: Oops"),
    ("bug", r"kernel BUG at |BUG: |BUG [\w-]+ \(.*\): "),
)]
OOPS_MARK = re.compile(r"Oops: |Internal error: Oops")
END_MARK = re.compile(r"---\[ end (trace|Kernel panic)")
ENDS_AT_TRACE = ("lockdep", "rcu_stall", "hung_task", "kmemleak")   # no end marker

STAMP = re.compile(r"\[\s*\d+\.\d{6}\](\[\s*[CT]\d+\])? ?")         # [   12.345678][ T123]
LEVEL = re.compile(r"^(<\d+>|\d+,\d+,\d+,[^;]*;|\w+\s*:\s*\w+\s*: |"  # <4>, /dev/kmsg, dmesg -x
                   r"\[\w{3} \w{3} [ \d]\d [\d:]{8} \d{4}\] )")      # dmesg -T
FRAME = re.compile(r"(?:\[<[0-9a-f]+>\]\s*)?(\?\s+)?"             # [<address>] ? (unreliable)
                   r"([A-Za-z_][\w.$]*)\+(0x[0-9a-f]+/0x[0-9a-f]+)"  # func+0x12/0x34
                   r"(?:\s+\[([\w-]+)[^\]]*\])?"                      # [module buildid]
                   r"(?:\s+\S+:\d+(?::\d+)?)?(?:\s+\([A-Z]\))?$")     # file:line (decoded), (P)
TRACE_HEADER = re.compile(r"(Call [Tt]race|backtrace( \(crc \w+\))?):$")
TRACE_NOISE = re.compile(r"</?(TASK|IRQ|NMI|SOFTIRQ|EOI)>$|Code: |[A-Z][A-Z0-9]{1,7}:\s|"
                         r"[A-Za-z_][\w.$]* \S+:\d+(:\d+)? \[inline\]$")    # registers, inlined
AT = re.compile(r"\b(?:in|at) (?:\S+:\d+ )?([A-Za-z_][\w.$]*)\+0x")    # in a headline
RIP = re.compile(r"(?:RIP: [0-9a-f]{4}:|pc : |EIP: )(?:\[<[0-9a-f]+>\] )?([A-Za-z_][\w.$]*)\+0x")
WHO = [re.compile(p) for p in (        # task names are short: bounded, never quadratic
    r"^CPU: (?P<cpu>\d+) (?:UID: \d+ )?PID: \d+ Comm: (?P<task>.{1,64}?)"
    r"(?: (?:Not tainted|Tainted:).*)?$",
    r", CPU#(?P<cpu>\d+): (?P<task>.{1,64})/\d+$",                     # WARNING headline (6.x+)
    r"^WARNING: CPU: (?P<cpu>\d+) PID",
    r"^INFO: task (?P<task>.{1,64}):\d+ blocked",
    r"^task:(?P<task>\S{1,64})\s+state:",
    r"\bby task (?P<task>\S{1,64}?)/\d+",
    r'^comm "(?P<task>.{0,64})", pid \d+',
    r"CPU#(?P<cpu>\d+) stuck for \d+s! \[(?P<task>.{1,64}):\d+\]")]
MACHINERY = (                           # leading frames of the reporting code itself
    r"_*dump_stack\w*|show_stack|v?panic|nmi_panic|check_panic_on_warn|__warn\w*|"
    r"warn_slowpath\w*|report_bug|handle_bug|exc_invalid_op|asm_exc_\w+|do_error_trap|do_trap|"
    r"print_report|end_report|_*kasan_\w+|__asan_\w+|kfence_\w+|_*ubsan_\w+|__might_\w+|"
    r"print_\w*bug\w*|check_noncircular|check_prev_add|validate_chain|check_irq_usage|mark_lock\w*|"
    r"_*lock_acquire|_*lock_release|lockdep_\w+|_raw_\w+|_*mutex_lock\w*|_*schedule\w*|"
    r"io_schedule\w*|preempt_schedule\w*|rcu_dump_cpu_stacks|print_cpu_stall\w*")
ALLOCATOR = (                           # ... and of kmemleak's allocation backtraces
    r"_*kmalloc\w*|_*kmem_cache_alloc\w*|k[vz]?[mz]?alloc\w*|krealloc\w*|kmemdup\w*|"
    r"kstrdup\w*|_*alloc_pages\w*|_*vmalloc\w*|pcpu_alloc\w*|_*slab_\w+|kmemleak_\w+|"
    r"_*do_kmalloc\w*|alloc_slab\w*")
SKIP = {kind: re.compile(f"(?:{MACHINERY}|{ALLOCATOR})$" if kind == "kmemleak"
                         else f"(?:{MACHINERY})$") for kind in KINDS}


@dataclasses.dataclass(frozen=True)
class Crash:
    kind: str                   # one of KINDS
    headline: str               # the kernel's headline, time stamp and level stripped
    function: str | None        # where: RIP/pc, a WARNING's "at func", else first frame
    task: str | None            # Comm
    cpu: int | None
    trace: tuple[str, ...]      # "func+0x12/0x34 [module]", "? " frames dropped
    fingerprint: str            # kind:frame<-frame<-... (see the module's docstring)
    lines: tuple[str, ...]      # the block as logged, time stamps kept

    def summary(self):
        where = f" in {self.function}" if self.function else ""
        return f"{self.kind}: {self.headline}{where} (fingerprint {self.fingerprint})"

    def describe(self, frames=24):
        """Several lines: kind and headline, where and who, fingerprint, then the first
        ``frames`` frames of the call trace (all of them are in ``trace``)."""
        who = ", ".join(([f"task {self.task}"] if self.task else [])
                        + ([f"CPU {self.cpu}"] if self.cpu is not None else []))
        text = [f"{self.kind}: {self.headline}",
                f"  at {self.function or '?'}" + (f" ({who})" if who else ""),
                f"  fingerprint {self.fingerprint}"]
        if self.trace:
            text += ["  Call Trace:"] + [f"    {frame}" for frame in self.trace[:frames]]
        if len(self.trace) > frames:
            text.append(f"    ... {len(self.trace) - frames} more frames")
        return "\n".join(text)


def message(line):
    """(whether the line carries a kernel time stamp, its text without prefixes)."""
    line = LEVEL.sub("", line)
    stamp = STAMP.search(line)
    return (True, line[stamp.end():]) if stamp else (False, line)


def headline_kind(text):
    for kind, pattern in HEADLINES:
        if pattern.match(text):
            return kind
    return None


def _name(frame):
    """A frame's function name without offset, module or compiler suffix; None for "? "."""
    frame = str(frame).strip()
    if match := FRAME.match(frame):
        return None if match[1] else match[2].split(".")[0]
    return frame.split(".")[0] if re.fullmatch(r"[A-Za-z_][\w.$]*", frame) else None


def _top(kind, names):
    """``names`` from the first one that is not the reporting machinery's own."""
    skip = SKIP.get(kind, SKIP["bug"])
    start = next((i for i, name in enumerate(names) if not skip.match(name)), 0)
    return names[start:]


def fingerprint(kind, frames):
    """``kind:f1<-f2<-...`` from the top FRAMES function names of ``frames`` (trace lines
    or bare names), the reporting machinery's leading frames skipped."""
    names = _top(kind, [n for n in map(_name, frames) if n])
    return f"{kind}:" + ("<-".join(names[:FRAMES]) or "?")


def _trace(texts):
    """Frames of the main call trace: after the first trace header (else from the first
    frame) up to </TASK> or the first line that is not part of a trace."""
    start = next((i + 1 for i, t in enumerate(texts) if TRACE_HEADER.match(t)), None)
    if start is None:
        start = next((i for i, t in enumerate(texts) if FRAME.match(t)), len(texts))
    frames = []
    for text in texts[start:]:
        if match := FRAME.match(text):
            if not match[1]:
                frames.append(f"{match[2]}+{match[3]}" + (f" [{match[4]}]" if match[4] else ""))
        elif text == "</TASK>" or (frames and not TRACE_NOISE.match(text)):
            break
    return tuple(frames)


def _parse(kind, lines, texts, previous):
    headline = texts[0].strip()
    trace = _trace(texts)
    names = _top(kind, [n for n in map(_name, trace) if n])
    match = AT.search(headline) or next(filter(None, map(RIP.match, texts)), None)
    function = match[1].split(".")[0] if match else (names[0] if names else None)
    task = cpu = None
    for pattern in WHO:
        for text in texts:
            if match := pattern.search(text):
                task = task or match.groupdict().get("task")
                cpu = cpu if cpu is not None else match.groupdict().get("cpu")
                break
    if function and names[:1] != [function]:
        names.insert(0, function)       # the faulting function leads
    cpu = int(cpu) if cpu is not None else None
    if kind == "panic" and not trace and previous is not None:     # "Fatal exception"
        return Crash(kind, headline, function or previous.function, task or previous.task,
                     previous.cpu if cpu is None else cpu, trace,
                     "panic:" + previous.fingerprint.partition(":")[2], tuple(lines))
    if names:
        fp = fingerprint(kind, names)
    else:
        fp = f"{kind}:" + (re.sub(r"\W+", "_", re.sub(r"0x[0-9a-f]+|\d+", "", headline))
                           .strip("_") or "?")
    return Crash(kind, headline, function, task, cpu, trace, fp, tuple(lines))


@dataclasses.dataclass
class _Block:
    kind: str
    first: int                  # index of the headline in the log's lines
    lines: list                 # as logged
    texts: list                 # the kernel's messages among them, prefixes stripped
    stamped: bool               # time-stamped headline: unstamped lines are user space's
    in_trace: bool = False      # a trace header was seen
    framed: bool = False        # ... and a frame after it


def _blocks(lines):
    stamped_log = any(STAMP.search(line) for line in lines[:2000])
    blocks, current = [], None
    for index, line in enumerate(lines):
        stamped, text = message(line)
        text = re.sub(r"^kmemleak: ", "", text.strip())
        kind = headline_kind(text)
        if kind and stamped_log and not stamped and kind != "kmemleak":
            kind = None                 # user space on the console, not the kernel
        if kind == "oops" and current and current.kind in ("bug", "oops") \
                and OOPS_MARK.match(text) and not any(
                    t.startswith("CPU: ") or FRAME.match(t) for t in current.texts):
            kind = None                 # "Oops: ..." under its "BUG: ..." headline
        if kind:
            current = _Block(kind, index, [line], [text], stamped)
            blocks.append(current)
            continue
        if current is None:
            continue
        if current.stamped and not stamped:
            current.lines.append(line)  # user space writing to the console meanwhile
            continue
        if current.kind in ENDS_AT_TRACE and current.framed and not (
                FRAME.match(text) or TRACE_NOISE.match(text)):
            current = None              # the report ended with its trace
            continue
        current.lines.append(line)
        current.texts.append(text)
        current.in_trace = current.in_trace or bool(TRACE_HEADER.match(text))
        current.framed = current.framed or bool(current.in_trace and FRAME.match(text))
        if END_MARK.search(text) or (text == "</TASK>" and current.kind in ENDS_AT_TRACE) \
                or (current.kind in ("kasan", "kfence", "ubsan") and re.fullmatch(r"=+", text)) \
                or len(current.lines) >= MAX_LINES:
            current = None
    return blocks


def extract(text):
    """Every crash report in ``text`` (a console log or dmesg), in order. Never raises."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    found, previous, previous_end = [], None, None
    for block in _blocks(str(text or "").splitlines()):
        near = previous_end is not None and block.first - previous_end <= INHERIT_LINES
        crash = _parse(block.kind, block.lines, block.texts, previous if near else None)
        found.append(crash)
        previous, previous_end = crash, block.first + len(block.lines)
    return found
