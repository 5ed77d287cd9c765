"""The framework's own tests: unit/ (no VM; shared/, host/ and guest/ mirror mptcp_nvme/),
integration/ (real kernels in real VMs). data/ holds real captured output."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
