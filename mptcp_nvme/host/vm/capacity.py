"""-n auto: as many VMs side by side as the host can run, one emulation thread each on
a core of its own (TCG keeps one host thread busy per guest) and each guest's memory
plus qemu's own within what the host has available, keeping some for the host."""

import os

import psutil

from mptcp_nvme.options import MAX_VMS

OVERHEAD = 384 << 20          # qemu and its virtiofsd beside the guest's memory
RESERVE = 1 << 30             # for the host: pytest, page cache of the shared tree


def memory_bytes(text):
    """'2G' or '512M' (options' --memory) in bytes."""
    return int(text[:-1]) << (30 if text[-1] == "G" else 20)


def available_memory():
    return psutil.virtual_memory().available


def vm_count(memory, cores=None, available=None):
    """How many VMs of ``memory`` each to run side by side (1..MAX_VMS)."""
    cores = cores or len(os.sched_getaffinity(0))
    available = available if available is not None else available_memory()
    fits = (available - RESERVE) // (memory_bytes(memory) + OVERHEAD)
    return max(1, min(MAX_VMS, cores, fits))
