"""The guest side: what runs next to the kernel under test (in the VM, or natively as
root). Nothing here imports mptcp_nvme.host.

A selftest's API is this package: one import names everything a test uses, e.g.

    from mptcp_nvme.guest import DIAG, fio, require, topology, wait_for

Names are loaded when first asked for (PEP 562), so a test imports only what it names:
pyroute2 (the builder, sock_diag) stays off the start-up path of a test that builds no
network. ``API`` lists every name with where it lives; README "Writing a selftest" shows
the skeleton.
"""

import importlib

# name -> (module, attribute or None for the module itself)
API = {
    # reporting and gating
    "DIAG": ("mptcp_nvme.channel", "DIAG"),
    "results_dir": ("mptcp_nvme.channel", "results_dir"),
    "require": ("mptcp_nvme.guest.checks.gates", "require"),
    "enable_selftest_checks": ("mptcp_nvme.guest.checks.gates", "enable_selftest_checks"),
    "mptcp_counter_findings": ("mptcp_nvme.guest.checks.gates", "mptcp_counter_findings"),
    "judge_link_limited": ("mptcp_nvme.guest.checks.gates", "judge_link_limited"),
    "requirements": ("mptcp_nvme.guest.checks.requirements", None),
    "NVMET": ("mptcp_nvme.guest.checks.requirements", "NVMET"),
    "load_module": ("mptcp_nvme.guest.checks.requirements", "load_module"),
    "health": ("mptcp_nvme.guest.checks.health", None),
    "KernelLog": ("mptcp_nvme.guest.checks.health", "KernelLog"),
    # the network: the shared model, its builder and what the sockets show
    "topology": ("mptcp_nvme.topology", None),
    "builder": ("mptcp_nvme.guest.net.builder", None),
    "pool": ("mptcp_nvme.guest.net.pool", None),
    "sock_diag": ("mptcp_nvme.guest.net.sock_diag", None),
    "proof": ("mptcp_nvme.guest.net.proof", None),
    "netstat": ("mptcp_nvme.guest.net.netstat", None),
    "stream": ("mptcp_nvme.guest.net.stream", None),
    "transport": ("mptcp_nvme.guest.net.transport", None),
    "IcCapture": ("mptcp_nvme.guest.net.pdu_capture", "IcCapture"),
    "HDGST": ("mptcp_nvme.guest.net.pdu_capture", "HDGST"),
    "DDGST": ("mptcp_nvme.guest.net.pdu_capture", "DDGST"),
    # NVMe: the target, the host, multipath
    "target": ("mptcp_nvme.guest.nvmet.target", None),
    "backing": ("mptcp_nvme.guest.nvmet.backing", None),
    "initiator": ("mptcp_nvme.guest.nvme.initiator", None),
    "commands": ("mptcp_nvme.guest.nvme.commands", None),
    "nvme_multipath": ("mptcp_nvme.guest.nvme.nvme_multipath", None),
    "dm_mpath": ("mptcp_nvme.guest.nvme.dm_mpath", None),
    # security
    "TLS_NEEDS": ("mptcp_nvme.guest.security.psk", "TLS_NEEDS"),
    "SUITE_HOSTNQN": ("mptcp_nvme.guest.security.psk", "SUITE_HOSTNQN"),
    "TlsKeys": ("mptcp_nvme.guest.security.psk", "TlsKeys"),
    "DerivedPsks": ("mptcp_nvme.guest.security.psk", "DerivedPsks"),
    "NewKeyring": ("mptcp_nvme.guest.security.psk", "NewKeyring"),
    "psk_description": ("mptcp_nvme.guest.security.psk", "psk_description"),
    "Tlshd": ("mptcp_nvme.guest.security.handshake", "Tlshd"),
    "tls_stat": ("mptcp_nvme.guest.security.ktls", "tls_stat"),
    "tcp_sockets_to": ("mptcp_nvme.guest.security.ktls", "tcp_sockets_to"),
    # I/O and faults
    "fio": ("mptcp_nvme.guest.io.fio", None),
    "filesystem": ("mptcp_nvme.guest.io.filesystem", None),
    "faults": ("mptcp_nvme.guest.faults", None),
    "quick": ("mptcp_nvme.guest.quick", None),
    "Measurement": ("mptcp_nvme.payloads", "Measurement"),
    # shared helpers and words
    "proc": ("mptcp_nvme.proc", None),
    "wait_for": ("mptcp_nvme.poll", "wait_for"),
    "samples_over": ("mptcp_nvme.poll", "samples_over"),
    "PollTimeout": ("mptcp_nvme.poll", "PollTimeout"),
    "SetupError": ("mptcp_nvme.errors", "SetupError"),
    "FAMILIES": ("mptcp_nvme.vocabulary", "FAMILIES"),
    "BACKINGS": ("mptcp_nvme.vocabulary", "BACKINGS"),
    "DM_SELECTORS": ("mptcp_nvme.vocabulary", "DM_SELECTORS"),
    "BOND_MODES": ("mptcp_nvme.vocabulary", "BOND_MODES"),
}

__all__ = sorted(API)


def __getattr__(name):
    try:
        module, attribute = API[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__():
    return __all__
