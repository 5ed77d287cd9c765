"""Guest-side case for tests/integration: a test that never finishes (the host must time it out)."""

import os


def test_blocks_forever():
    """reads a pipe nobody writes to"""
    reader, _writer = os.pipe()
    os.read(reader, 1)
