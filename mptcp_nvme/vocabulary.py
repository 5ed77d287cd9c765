"""The suite's words, defined once: what a run's options, the guest's configfs writes,
the matrix, the fault table and the reports may say. Shared by both sides; imports
nothing of the package. tests/unit/test_layout.py keeps every other module from
defining these names again."""

# NVMe over Fabrics transports (nvmet's addr_trtype, nvme connect -t).
TRTYPES = ("tcp", "mptcp")
# what a user's blktests run takes as NVMET_TRTYPES here ('mptcp-nvme blktests')
BLKTESTS_TRTYPES = ("tcp", "loop")
NVMF_TRTYPE_MPTCP = 4                  # the series' NVMF_TRTYPE_* value for mptcp

# Native multipath I/O policies (nvme_core iopolicy), upstream's first: mptcp_nvme.sh
# and the seed's matrix take those three.
IOPOLICIES = ("numa", "round-robin", "queue-depth", "weighted-lat", "adaptive")
SCRIPT_IOPOLICIES = IOPOLICIES[:3]

MULTIPATH = ("native", "dm", "bond")   # nvme's own multipath, dm-multipath over it, or one
                                       # path over a Linux bond of every link
# Linux bonding modes a bond of every link may take (topology.bonded), as bonding names them
BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "802.3ad")
DM_SELECTORS = ("service-time", "queue-length", "round-robin")
FAMILIES = ("ipv4", "ipv6", "v4map")   # a link's address family (v4map: IPv4-mapped IPv6)
BACKINGS = ("loop", "file", "null_blk")
FAULTS = ("link-down", "blackhole", "all-but-one-down", "endpoint", "port", "reset", "delete",
          "keep-alive")                # guest/faults.py implements each
ACCELS = ("auto", "kvm", "tcg")        # qemu accelerators

IPPROTO_MPTCP = 262                    # include/uapi/linux/in.h

# Marks a kernel tree whose build finished (the stand-in's and the series' caches).
BUILT_STAMP = ".mptcp-nvme-built"
