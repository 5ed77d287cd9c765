"""'mptcp-nvme series': a patch series against its base tree."""
