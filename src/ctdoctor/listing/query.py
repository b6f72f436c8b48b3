"""What ``top`` groups by and which entries it keeps: ``Query``, and ``parse_query`` for the flags
(a bad flag is a UsageError)."""

from __future__ import annotations

import ipaddress

from ctdoctor.errors import UsageError, no_such
from ctdoctor.listing.aggregate import AggArgs, Aggregator, Net, make_aggregator
from ctdoctor.listing.fields import (
    F_DPORT,
    F_DST,
    F_L3,
    F_MARK,
    F_PROTO,
    F_RDST,
    F_RSRC,
    F_SPORT,
    F_SRC,
    F_STATE,
    F_ZONE,
)
from ctdoctor.model.kernel import check_states

KEYS: dict[str, tuple[int, ...]] = {
    "src": (F_SRC,), "dst": (F_DST,), "sport": (F_SPORT,), "dport": (F_DPORT,), "pair": (F_SRC, F_DST, F_DPORT),
    "state": (F_STATE,), "proto": (F_PROTO,), "zone": (F_ZONE,), "mark": (F_MARK,),
    "reply-src": (F_RSRC,), "reply-dst": (F_RDST,), "l3": (F_L3,), "netns": (),
    "pod": (), "k8s-namespace": (),
}
# keys that group by where an entry lives (the netns, or the pod / Kubernetes namespace that holds it):
# the reader puts that name in front of the entry's key
NS_KEYS = ("netns", "pod", "k8s-namespace")


def _nets(cidrs: list[str] | None) -> tuple[Net, ...] | None:
    if not cidrs:
        return None
    out = []
    for c in cidrs:
        n = ipaddress.ip_network(c, strict=False)
        out.append((n.version, n.network_address.packed, n.prefixlen))
    return tuple(out)


class Query:
    """What ``top`` groups by (``by``) and which entries it keeps (the filters)."""

    def __init__(self, by: list[str], states: list[str] | None = None, protos: list[str] | None = None,
                 port: int = -1, src: list[str] | None = None, dst: list[str] | None = None):
        self.by, self.states, self.protos, self.port, self.src, self.dst = by, states, protos, port, src, dst
        self.every = 1  # count every n-th entry only (a sample by position; see Aggregator.sample_every)

    def __repr__(self) -> str:
        return (f"Query(by={self.by!r}, states={self.states!r}, protos={self.protos!r}, port={self.port!r}, "
                f"src={self.src!r}, dst={self.dst!r})")

    def fields(self) -> tuple[int, ...]:
        out: list[int] = []
        for k in self.by:
            out.extend(KEYS[k])
        return tuple(out)

    def args(self) -> AggArgs:
        return (self.fields(),
                tuple(s.encode() for s in self.states) if self.states else None,
                tuple(p.encode() for p in self.protos) if self.protos else None,
                self.port, _nets(self.src), _nets(self.dst))

    def aggregator(self, force_python: bool = False) -> Aggregator:
        return make_aggregator(self.args(), self.every, force_python)


def _keys(by: str) -> list[str]:
    keys = [k.strip() for k in by.split(",") if k.strip()]
    if not keys:
        raise UsageError("--by needs at least one key")
    for k in keys:
        if k not in KEYS:
            raise no_such("--by key", k, KEYS)
    if len(keys) != len(set(keys)):
        raise UsageError("--by: a key is given twice")
    if len([k for k in keys if k in NS_KEYS]) > 1:
        raise UsageError("--by: use one of netns, pod, k8s-namespace")
    return keys


def _cidrs(name: str, val: str) -> list[str]:
    cidrs = [c.strip() for c in val.split(",") if c.strip()]
    for c in cidrs:
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            raise UsageError(f"--{name} {c}: not an address or CIDR") from None
    return cidrs


def _check_protos(protos: list[str]) -> None:
    """A protocol a listing names (``tcp``) or numbers (``132``): a typo (``tpc``) must never quietly
    match nothing."""
    from ctdoctor.listing.entry import PROTO_NUMBERS  # the entry model: only when a protocol is given

    for p in protos:
        if not (p.isdigit() and int(p) <= 255) and p not in PROTO_NUMBERS and p != "unknown":
            raise no_such("protocol", p, [*PROTO_NUMBERS, "unknown"])


def parse_query(by: str, state: str | None, proto: str | None, port: int | None, src: str | None,
                dst: str | None) -> Query:
    q = Query(_keys(by))
    if state:
        q.states = [s.strip().upper() for s in state.split(",") if s.strip()]
        check_states(q.states)
    if proto:
        q.protos = [p.strip().lower() for p in proto.split(",") if p.strip()]
        _check_protos(q.protos)
    if port is not None:
        if not 0 <= port <= 65535:
            raise UsageError("--port must be 0..65535")
        q.port = port
    if src:
        q.src = _cidrs("src", src)
    if dst:
        q.dst = _cidrs("dst", dst)
    return q
