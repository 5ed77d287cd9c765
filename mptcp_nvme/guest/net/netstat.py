"""The MPTcpExt counters of /proc/net/netstat: per test deltas, with the fallback and
checksum-error counters that fail a test."""





# --- MPTcpExt counters ----------------------------------------------------------

# MPCapableSYNTXDrop: a connect fell back to TCP after its MP_CAPABLE SYNs were lost;
# Blackhole: that fallback got through, and active MPTCP is off in the netns for a while
FALLBACK_COUNTERS = ("MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPCapableSYNTXDrop",
                     "Blackhole", "MPFallbackTokenInit",
                     "DSSCorruptionFallback", "MPCapableDataFallback", "DssFallback",
                     "SimultConnectFallback", "FallbackFailed", "InfiniteMapTx", "InfiniteMapRx")
ERROR_COUNTERS = ("DataCsumErr",)
REPORTED_PREFIXES = ("MPCapable", "MPJoin", "DSS", "Dss", "DataCsum", "MPFallback", "Infinite")


def parse_netstat(text, group="MPTcpExt"):
    """{name: value} of one group of /proc/net/netstat (name line, value line)."""
    lines = text.splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith(group + ":"):
            return {n: int(v) for n, v in zip(names.split()[1:], values.split()[1:])}
    return {}


def mptcp_counters():
    """MPTcpExt of the calling thread's network namespace."""
    with open("/proc/thread-self/net/netstat") as netstat:
        return parse_netstat(netstat.read())


def counter_delta(before, after):
    return {name: after[name] - before.get(name, 0) for name in after
            if after[name] != before.get(name, 0)}


def reported(delta):
    """The deltas worth a KTAP diagnostic: handshakes, joins, fallbacks, DSS, checksums."""
    return {name: value for name, value in sorted(delta.items())
            if name.startswith(REPORTED_PREFIXES) or name in FALLBACK_COUNTERS}


def counter_problems(delta):
    """Fallbacks and checksum errors in a delta, as sentences."""
    return [f"MPTcpExt {name} +{delta[name]}" for name in (*FALLBACK_COUNTERS, *ERROR_COUNTERS)
            if delta.get(name, 0) > 0]
