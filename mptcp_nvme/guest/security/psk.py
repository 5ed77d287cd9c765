"""NVMe/TCP TLS 1.3: tlshd in a network namespace, and the PSKs it hands the kernel.

As mptcp_nvme.sh sets it up: one tlshd in each namespace that owns a TLS socket
(target and host), configured to look PSKs up in the ``.nvme`` keyring, and a
retained PSK per (host NQN, subsystem NQN) pair made by nvme-cli, for the
subsystem and for the discovery subsystem. Every resource is a context manager
that undoes exactly what it did, also when a later step fails.
"""

import contextlib
import re
from pathlib import Path


from mptcp_nvme import proc
from mptcp_nvme.errors import SetupError

TLS_NEEDS = ("kconfig:NVME_TCP_TLS", "kconfig:NVME_TARGET_TCP_TLS", "kconfig:NET_HANDSHAKE",
             "kconfig:TLS", "module:tls", "tool:tlshd", "tool:keyctl", "tool:nvme",
             "tool:unshare", "feature:tls",
             "kconfig:NETLINK_DIAG")   # tlshd readiness: its handshake group membership
NVME_KEYRING = ".nvme"
# The TLS selftests connect with this host NQN: their PSKs are made for it.
SUITE_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b5e7e4a-2f2c-4d8e-9a53-6c1f3e2d7a10"
PSK_KEY_TYPE = "psk"
HMAC_SHA256 = 1
COMMAND_TIMEOUT = 60


def _command(argv, timeout=COMMAND_TIMEOUT):
    """Run ``argv``; the proc.cmd, whatever its exit code."""
    return proc.cmd(argv, fail=False, timeout=timeout)


def _checked(argv):
    return proc.cmd(argv, timeout=COMMAND_TIMEOUT).stdout


# --- PSKs -----------------------------------------------------------------------


class Keyring:
    """A kernel keyring, named as keyctl finds it (``%:NAME``)."""

    def __init__(self, name=NVME_KEYRING, keyctl="keyctl"):
        self.name = name
        self.keyctl = keyctl

    @property
    def spec(self):
        return f"%:{self.name}"

    def keys(self):
        """(serial, type, description) of every key in it we may view. Listed and
        described rather than searched: the keys nvme-cli makes grant search to their
        possessor only, and .nvme is possessed by tlshd, not by us."""
        for serial in _checked([self.keyctl, "rlist", self.spec]).split():
            described = _command([self.keyctl, "rdescribe", serial])
            if described.ret:    # unlinked meanwhile, or not ours to view
                continue
            kind, _, _, _, name = described.stdout.rstrip("\n").split(";", 4)
            yield int(serial), kind, name

    def find(self, key_type, description):
        """Serial of its ``key_type`` key called ``description``, None when it has none."""
        return next((serial for serial, kind, name in self.keys()
                     if (kind, name) == (key_type, description)), None)

    def unlink(self, serial):
        _checked([self.keyctl, "unlink", str(serial), self.spec])

    def adopt(self, serial):
        """Make a key just inserted here usable: nothing to do in .nvme, which tlshd
        links into its session keyring."""


class NewKeyring(Keyring):
    """A keyring of our own, linked into the user keyring (@u) and unlinked on exit.

    We possess it through the user session keyring (our session keyring when we have
    none of our own, as in the guest). nvme-cli and tlshd may not: nvme-cli links the
    keyring it inserts into to a session of its own, tlshd reads a PSK by serial. So
    it and the keys adopted into it are open to their user (root) as well.
    """

    OPEN_TO_USER = 0x3f3f0000   # possessor and user: view read write search link setattr
    serial = None

    @property
    def spec(self):
        return str(self.serial)

    def __enter__(self):
        self.serial = int(_checked([self.keyctl, "newring", self.name, "@u"]))
        with contextlib.ExitStack() as stack:
            stack.push(self)
            self.adopt(self.serial)
            stack.pop_all()
        return self

    def __exit__(self, *exc_info):
        _checked([self.keyctl, "unlink", str(self.serial), "@u"])

    def adopt(self, serial):
        _checked([self.keyctl, "setperm", str(serial), hex(self.OPEN_TO_USER)])


def suite_keys(keyring=None):
    """Descriptions of the PSKs in ``keyring`` (.nvme) made for SUITE_HOSTNQN: after a
    run there must be none."""
    try:
        keys = list((keyring or Keyring()).keys())
    except SetupError:          # no keyctl, or no .nvme keyring (nvme modules not loaded)
        return []
    return sorted(name for _, kind, name in keys if kind == PSK_KEY_TYPE and SUITE_HOSTNQN in name)


class DerivedPsks:
    """The PSKs that secure channel concatenation derives for ``hostnqn`` and
    ``subsysnqn`` (identity "NVMe1G<hmac> <hostnqn> <subsysnqn> <digest>"), which host
    and target insert in .nvme: on exit, those still linked there are listed in ``left``
    as (description, revoked) and unlinked. The host revokes its key on teardown, and a
    revoked key stays linked until the keyring's garbage collection (5 minutes)."""

    def __init__(self, hostnqn, subsysnqn, keyring=None):
        self.prefix = f" {hostnqn} {subsysnqn} "
        self.keyring = keyring or Keyring()
        self.left = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        flags = _proc_key_flags()
        for serial, kind, name in list(self.keyring.keys()):
            if kind == PSK_KEY_TYPE and name.startswith("NVMe1G") and self.prefix in name:
                self.left.append((name, "R" in flags.get(serial, "")))
                self.keyring.unlink(serial)


def _proc_key_flags():
    """{serial: flags column of /proc/keys} ("R" at its second place: revoked)."""
    flags = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/keys").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1:
                flags[int(fields[0], 16)] = fields[1]
    return flags


def psk_description(hostnqn, subsysnqn, hmac=HMAC_SHA256):
    """How a retained PSK (TLS identity version 0) is called in its keyring."""
    return f"NVMe0R{hmac:02d} {hostnqn} {subsysnqn}"


def has_keys_plugin(nvme="nvme"):
    """Whether this nvme-cli has the ``keys`` plugin (nvme-cli 3), that lists gen-tls."""
    done = _command([nvme, "keys", "help"])
    return re.search(r"^\s+gen-tls\s", done.stdout + done.stderr, re.MULTILINE) is not None


def gen_tls_argv(hostnqn, subsysnqn, keyring=NVME_KEYRING, hmac=HMAC_SHA256, nvme="nvme",
                 keys_plugin=None):
    """nvme-cli's command that makes a retained PSK and inserts it in ``keyring``:
    ``nvme keys gen-tls`` where it exists, else ``nvme gen-tls-key``."""
    if keys_plugin is None:
        keys_plugin = has_keys_plugin(nvme)
    command = ["keys", "gen-tls"] if keys_plugin else ["gen-tls-key"]
    return [nvme, *command, f"--keyring={keyring}", f"--hostnqn={hostnqn}",
            f"--subsysnqn={subsysnqn}", f"--hmac={hmac}", "--insert"]


_INSERTED = re.compile(r"Inserted TLS key ([0-9a-fA-F]+)")


class TlsKeys:
    """A fresh retained PSK for ``hostnqn`` and each of ``subsysnqns`` in ``keyring``
    (default: .nvme), made by nvme-cli.

    ``serials`` maps each subsystem NQN to its key. A key that already exists is
    not replaced (SetupError): on exit, exactly the keys inserted here are unlinked.
    """

    def __init__(self, hostnqn, subsysnqns, *, keyring=None, hmac=HMAC_SHA256, nvme="nvme"):
        self.hostnqn = hostnqn
        self.subsysnqns = tuple(subsysnqns)
        self.keyring = keyring or Keyring()
        self.hmac = hmac
        self.nvme = nvme
        self.serials = {}

    def __enter__(self):
        keys_plugin = has_keys_plugin(self.nvme)
        with contextlib.ExitStack() as stack:
            for subsysnqn in self.subsysnqns:
                self.serials[subsysnqn] = self._insert(stack, subsysnqn, keys_plugin)
            self._cleanup = stack.pop_all()
        return self

    def __exit__(self, *exc_info):
        self._cleanup.close()

    def _insert(self, stack, subsysnqn, keys_plugin):
        description = psk_description(self.hostnqn, subsysnqn, self.hmac)
        existing = self.keyring.find(PSK_KEY_TYPE, description)
        if existing is not None:
            raise SetupError(f"{self.keyring.name} already holds {description!r} "
                             f"(serial {existing}): not replacing it")
        output = _checked(gen_tls_argv(self.hostnqn, subsysnqn, self.keyring.name,
                                       self.hmac, self.nvme, keys_plugin))
        inserted = _INSERTED.search(output)
        if not inserted:
            raise SetupError(f"nvme-cli did not say which key it inserted: {output!r}")
        serial = int(inserted.group(1), 16)
        stack.callback(self.keyring.unlink, serial)
        self.keyring.adopt(serial)
        found = self.keyring.find(PSK_KEY_TYPE, description)
        if found != serial:
            raise SetupError(f"inserted key {serial} but {self.keyring.name} finds "
                             f"{description!r} as {found}")
        return serial
