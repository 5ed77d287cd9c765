"""NVMe over Fabrics (TCP and MPTCP) kernel selftests run under virtme-ng.

The package's sides: ``guest`` runs next to the kernel under test (in the VM),
``host`` drives runs from outside it; the modules at this level are shared by both and
import neither."""

from pathlib import Path

__version__ = "0.1.0"

# The source tree (the guest sees it read-only at channel.GUEST_SOURCE_DIR).
SOURCE_DIR = Path(__file__).resolve().parent.parent
