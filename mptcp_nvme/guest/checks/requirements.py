"""What the running kernel and root filesystem offer, and what a test requires of them.

Tests declare requirements as strings, ``@pytest.mark.requires("module:nvmet",
"kconfig:NVME_TCP_TLS", "tool:tlshd", "trtype:mptcp", "iopolicy:queue-depth",
"feature:tls", "tls:mptcp")``; every unmet one is named in the SKIP reason.
``tls:<trtype>`` is TLS on ports of that transport: nvmet must take addr_tsas=tls1.3
there (the NVMe mptcp transport needs kTLS on MPTCP sockets for it, a further series).
"""

import contextlib
import dataclasses
import errno
import gzip
import os
import platform
import random
import re
import shutil
from pathlib import Path

from mptcp_nvme import proc
from mptcp_nvme.vocabulary import IOPOLICIES, TRTYPES

CONFIGFS = Path("/sys/kernel/config")
NVMET = CONFIGFS / "nvmet"
FABRICS_DEV = Path("/dev/nvme-fabrics")
IOPOLICY_PARAM = Path("/sys/module/nvme_core/parameters/iopolicy")
PROBE_MODULES = ("nvmet", "nvmet_tcp", "nvme_tcp")
PROBE_TRTYPES = TRTYPES
TOOLS = ("nvme", "fio", "keyctl", "tlshd", "iperf3", "losetup", "nsenter")
KINDS = ("module", "kconfig", "tool", "trtype", "iopolicy", "feature", "tls")
# Why TLS is refused on a transport, beyond nvmet's errno.
TLS_REFUSAL_HINTS = {"mptcp": "no kTLS on MPTCP sockets (needs the MPTCP kTLS series)"}


def read_kconfig(release=None):
    """CONFIG_* values from /proc/config.gz or /boot/config-<release>; {} when neither."""
    release = release or platform.release()
    text = None
    with contextlib.suppress(OSError):
        text = gzip.open("/proc/config.gz", "rt").read()
    if text is None:
        with contextlib.suppress(OSError):
            text = Path(f"/boot/config-{release}").read_text()
    return parse_kconfig(text or "")


def parse_kconfig(text):
    """{NAME: value} of .config or fragment text, without the CONFIG_ prefix; 'n' for
    '# CONFIG_NAME is not set'."""
    # One regex pass over the text, in its order: a .config has ~10000 lines.
    return {set_name or unset_name: value if set_name else "n"
            for set_name, value, unset_name in _OPTION.findall(text)}


_OPTION = re.compile(r"^[ \t]*(?:CONFIG_(\w+)=(.*?)|# CONFIG_(\w+) is not set)[ \t]*$", re.M)


def load_kernel_modules(names, modules_dir=None):
    """{name: load_module(name)} with one modprobe for all of them (each one more
    process costs a tenth of a second under TCG); a name that failed is retried alone."""
    proc.cmd(["modprobe", "-a", *names], fail=False)
    return {name: _loaded(name, modules_dir) or load_module(name, modules_dir) for name in names}


def load_module(name, modules_dir=None):
    """modprobe; True when the module is loaded or built in afterwards."""
    proc.cmd(["modprobe", name], fail=False)
    return _loaded(name, modules_dir)


def _loaded(name, modules_dir=None):
    """A built-in module without parameters has no /sys/module entry (CONFIG_TLS=y), so
    modules.builtin of the running kernel decides for those."""
    stem = name.replace("-", "_")
    if Path("/sys/module", stem).exists():
        return True
    builtin = Path(modules_dir or Path("/lib/modules", os.uname().release), "modules.builtin")
    with contextlib.suppress(OSError):
        return any(Path(line).name.removesuffix(".ko").replace("-", "_") == stem
                   for line in builtin.read_text().split())
    return False


def mount_configfs():
    """configfs must be mounted for nvmet; True when it is."""
    if not os.path.ismount(CONFIGFS):
        proc.cmd(["mount", "-t", "configfs", "none", str(CONFIGFS)], fail=False)
    return os.path.ismount(CONFIGFS)


def probe_trtypes(candidates=PROBE_TRTYPES):
    """Transports nvmet accepts, and TLS on each, tried on a scratch port:
    ({trtype: None or why not}, {trtype: None or why no TLS there})."""
    port = NVMET / "ports" / str(random.randint(30000, 39999))
    verdicts, tls = {}, {}
    try:
        port.mkdir()
    except OSError as err:
        why = f"cannot create an nvmet port: {err.strerror}"
        return dict.fromkeys(candidates, why), dict.fromkeys(candidates, why)
    try:
        for trtype in candidates:
            try:
                (port / "addr_trtype").write_text(trtype)
                verdicts[trtype] = None
            except OSError as err:
                verdicts[trtype] = f"nvmet rejects addr_trtype={trtype} ({_errname(err)})"
                tls[trtype] = f"NVMe transport {trtype} missing"
                continue
            try:
                (port / "addr_tsas").write_text("tls1.3")
                tls[trtype] = None
            except OSError as err:
                hint = TLS_REFUSAL_HINTS.get(trtype)
                tls[trtype] = (f"nvmet rejects addr_tsas=tls1.3 on a {trtype} port "
                               f"({_errname(err)})" + (f": {hint}" if hint else ""))
    finally:
        port.rmdir()
    return verdicts, tls


def _errname(err):
    return errno.errorcode.get(err.errno, str(err.errno))


def probe_iopolicies():
    """The iopolicy values nvme_core accepts (tried on its module parameter, then restored)."""
    try:
        original = IOPOLICY_PARAM.read_text().strip()
    except OSError:
        return ()
    accepted = []
    try:
        for policy in IOPOLICIES:
            with contextlib.suppress(OSError):
                IOPOLICY_PARAM.write_text(policy)
                accepted.append(policy)
    finally:
        with contextlib.suppress(OSError):
            IOPOLICY_PARAM.write_text(original)
    return tuple(accepted)


def kernel_fabrics_options():
    """Option tokens /dev/nvme-fabrics understands (e.g. ``tls``, ``transport``)."""
    try:
        text = FABRICS_DEV.read_text()
    except OSError:
        return ()
    return tuple(token.split("=", 1)[0] for token in text.strip().split(","))


@dataclasses.dataclass
class Features:
    """One probe of the running system; ``unmet()`` turns requirements into reasons."""

    release: str
    kconfig: dict
    modules: dict        # name -> loaded?
    configfs: bool
    trtypes: dict        # trtype -> None (accepted) or why not
    tls_trtypes: dict    # trtype -> None (TLS ports accepted) or why not
    iopolicies: tuple
    fabrics_options: tuple
    tools: dict          # name -> path or None

    @classmethod
    def probe(cls):
        modules = load_kernel_modules(PROBE_MODULES)
        configfs = mount_configfs()
        if modules["nvmet"] and configfs:
            trtypes, tls_trtypes = probe_trtypes()
        else:
            trtypes = tls_trtypes = dict.fromkeys(PROBE_TRTYPES, "nvmet or configfs unavailable")
        return cls(
            release=platform.release(),
            kconfig=read_kconfig(),
            modules=modules,
            configfs=configfs,
            trtypes=trtypes,
            tls_trtypes=tls_trtypes,
            iopolicies=probe_iopolicies(),
            fabrics_options=kernel_fabrics_options(),
            tools={tool: shutil.which(tool) for tool in TOOLS},
        )

    def unmet(self, requirement):
        """None when ``requirement`` holds, else why it does not."""
        kind, _, name = requirement.partition(":")
        if kind == "module":
            return None if self.modules.get(name) or load_module(name) else f"module {name} not available"
        if kind == "kconfig":
            if not self.kconfig:
                return f"CONFIG_{name} unknown (no /proc/config.gz or /boot/config-{self.release})"
            return None if self.kconfig.get(name) in ("y", "m") else f"CONFIG_{name} not set"
        if kind == "tool":
            return None if self.tools.get(name) or shutil.which(name) else f"tool {name} not installed"
        if kind == "trtype":
            reason = self.trtypes.get(name, f"trtype {name} not probed")
            return None if reason is None else f"NVMe transport {name}: {reason}"
        if kind == "iopolicy":
            return None if name in self.iopolicies else f"iopolicy {name} not offered by nvme_core"
        if kind == "feature" and name == "tls":
            return None if "tls" in self.fabrics_options else "/dev/nvme-fabrics has no tls option"
        if kind == "tls":
            reason = self.tls_trtypes.get(name, f"TLS on trtype {name} not probed")
            return None if reason is None else f"TLS over {name}: {reason}"
        raise ValueError(f"unknown requirement {requirement!r} (kinds: {', '.join(KINDS)})")

    def summary(self):
        """One line for the KTAP header."""
        trtypes = ",".join(t for t, why in self.trtypes.items() if why is None) or "none"
        refused = "; ".join(why for why in self.trtypes.values() if why)
        trtypes += f" ({refused})" if refused else ""
        missing_tools = ",".join(t for t, path in self.tools.items() if not path) or "none"
        modules = ",".join(n for n, ok in self.modules.items() if ok) or "none"
        tls = "no (/dev/nvme-fabrics has no tls option)"
        if "tls" in self.fabrics_options:
            tls = ",".join(t for t, why in self.tls_trtypes.items() if why is None) or "none"
            tls += "".join(f" ({t}: {why})" for t, why in self.tls_trtypes.items()
                           if why and self.trtypes.get(t) is None)
        return (f"kernel {self.release}: modules {modules}; nvmet trtypes {trtypes}; "
                f"tls {tls}; "
                f"iopolicies {','.join(self.iopolicies) or 'none'}; "
                f"kconfig {'yes' if self.kconfig else 'unknown'}; missing tools {missing_tools}")
