"""The VM: qemu through virtme-ng, the session with the guest agent, and the pytest
plugin that runs each test in it."""
