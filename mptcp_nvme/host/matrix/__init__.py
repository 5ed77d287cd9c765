"""'mptcp-nvme matrix': the seed's results table, its runs and its report."""
