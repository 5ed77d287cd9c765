"""The topology corpus: every file it writes loads as a user's would, the edge cases are
what they say, and a seed always draws the same topology."""

from mptcp_nvme import topology, topology_corpus


def test_every_corpus_topology_loads_and_random_ones_span_the_space():
    loaded = topology_corpus.check_all(range(80))
    counts = {len(t.links) for t in loaded.values()}
    assert counts == set(range(1, topology.MAX_LINKS + 1))
    families = {frozenset(link.family for link in t.links) for t in loaded.values()}
    assert frozenset({"ipv4", "ipv6", "v4map"}) in families
    assert any(link.netem.loss_pct and link.netem.jitter_us
               for t in loaded.values() for link in t.links)
    assert topology_corpus.random_one(7) == topology_corpus.random_one(7)
    assert topology_corpus.random_one(7) != topology_corpus.random_one(8)


def test_the_edges_are_what_their_names_say():
    edges = topology_corpus.check_all(())
    assert len(edges["one-link"].links) == 1
    assert len(edges["eight-links"].links) == topology.MAX_LINKS
    assert {link.family for link in edges["all-ipv6"].links} == {"ipv6"}
    assert {link.family for link in edges["mixed-v4map"].links} == {"ipv4", "v4map", "ipv6"}
    rates = sorted(link.netem.rate_bit for link in edges["one-slow"].links)
    assert rates[-1] == 10 * rates[0]
    assert [bool(link.netem.loss_pct) for link in edges["loss-on-one"].links] == \
        [False, False, True]
    assert all(link.netem.loss_pct for link in edges["loss-on-all"].links)


def test_a_written_file_is_checked_like_a_users(tmp_path):
    bad = {"broken": topology_corpus.toml("x", [topology_corpus.link(rate_mbit=-1)])}
    try:
        topology_corpus.write(tmp_path, bad)
    except topology.UsageError as err:
        assert "broken.toml" in str(err) and "rate" in str(err)
    else:
        raise AssertionError("an invalid generated topology was accepted")
