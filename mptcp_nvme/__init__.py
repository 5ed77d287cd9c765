"""NVMe over Fabrics (TCP and MPTCP) kernel selftests run under virtme-ng."""

__version__ = "0.1.0"
