"""A corpus of topology files as users write them: the edge ones (1 link, 8 links, all
IPv6, mixed families with v4map, one link 10x slower, loss on one link, loss on all) and
seeded random ones (1..MAX_LINKS links, any family per link, any rates, delay, jitter
and loss on some links). Every file is TOML, loaded back through load_topology() as a
user's would be, so a generator bug is a UsageError here, not a surprise in a VM.

ci/topology-corpus runs the suite's topology-sensitive selection on each;
tests/integration/test_topology_corpus.py runs a fixed subset in CI.
"""

import random
import tempfile
from pathlib import Path

from mptcp_nvme.topology import MAX_LINKS, load_topology
from mptcp_nvme.vocabulary import FAMILIES

RATES_MBIT = (20, 30, 50, 100, 200)


def link(family="ipv4", rate_mbit=50, delay_ms=0.0, jitter_ms=0.0, loss_pct=0.0):
    """One [[link]] entry's values (name and addresses default per index)."""
    return {"family": family, "rate": f"{rate_mbit}mbit", "delay": f"{delay_ms:g}ms",
            "jitter": f"{jitter_ms:g}ms", "loss": f"{loss_pct:g}%"}


def toml(description, links):
    """The topology file of ``links`` (link() values), the script's sides."""
    lines = [f'description = "{description}"', "",
             "[target]", 'endpoint_flags = ["signal"]', "",
             "[host]", 'endpoint_flags = ["subflow"]']
    for values in links:
        lines += ["", "[[link]]"]
        lines += [f'{key} = "{value}"' for key, value in values.items()
                  if value not in ("0ms", "0%")]
    return "\n".join(lines) + "\n"


EDGES = {
    "one-link": ("1 ipv4 link", [link()]),
    "eight-links": (f"{MAX_LINKS} ipv4 links", [link(rate_mbit=20)] * MAX_LINKS),
    "all-ipv6": ("3 ipv6 links", [link("ipv6")] * 3),
    "mixed-v4map": ("ipv4, v4map and ipv6 links, 200/100/50mbit, jitter on one",
                    [link("ipv4", 200), link("v4map", 100, 2, 1), link("ipv6", 50)]),
    "one-slow": ("4 links, one 10x slower", [link(rate_mbit=200)] * 3 + [link(rate_mbit=20)]),
    "loss-on-one": ("3 links, loss and delay on one only",
                    [link(), link(), link(delay_ms=5, loss_pct=0.5)]),
    "loss-on-all": ("2 links, loss and delay on both", [link(delay_ms=5, loss_pct=0.5)] * 2),
}


def edges():
    """{name: TOML text} of the edge topologies."""
    return {name: toml(description, links) for name, (description, links) in EDGES.items()}


def random_one(seed):
    """(name, TOML text) of a valid topology drawn from ``seed``."""
    rng = random.Random(seed)
    links = []
    for _ in range(rng.randint(1, MAX_LINKS)):
        delay = rng.choice((0, 0, 1, 2, 5))
        links.append(link(rng.choice(FAMILIES), rng.choice(RATES_MBIT), delay,
                          jitter_ms=rng.choice((0, delay / 2)) if delay else 0,
                          loss_pct=rng.choice((0, 0, 0, 0.1, 0.5)) if delay else 0))
    return f"random-{seed}", toml(f"seed {seed}: {len(links)} random links", links)


def corpus(seeds=()):
    """{name: TOML text}: the edges, then one random topology per seed."""
    return {**edges(), **dict(random_one(seed) for seed in seeds)}


def write(folder, texts):
    """Each text as <folder>/<name>.toml, checked by load_topology(); the paths."""
    paths = {}
    for name, text in texts.items():
        path = Path(folder) / f"{name}.toml"
        path.write_text(text)
        load_topology(path)
        paths[name] = path
    return paths


def check_all(seeds):
    """Every corpus topology written and loaded back (in a scratch folder)."""
    with tempfile.TemporaryDirectory() as folder:
        return {name: load_topology(path) for name, path in write(folder, corpus(seeds)).items()}
