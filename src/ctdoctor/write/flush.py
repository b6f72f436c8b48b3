"""Deleting entries of one netns over ctnetlink (``ctdoctor flush``): one dump selects them by
state, address or port (never ASSURED ESTABLISHED ones unless asked: deleting them breaks live
connections under a stateful filter or NAT), then the delete requests go out.

With the C extension the dump is decoded in C and the delete requests are built from the dump's
own attributes (no entry ever becomes a Python object); without it every entry is decoded in
Python and filtered by the same ``listing.aggregate.Filter`` rules."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.aggregate import AggArgs, Aggregator, Filter, Net, PyAggregator, make_aggregator
from ctdoctor.listing.entry import Entry, entry_fields
from ctdoctor.listing.fields import F_DPORT, F_PROTO, SEP
from ctdoctor.sources import ctnetlink
from ctdoctor.sources import netns as nsmod


@dataclass
class Selection:
    """What a flush matched: counts, a sample of the most common groups, and how to delete them."""

    before: int
    matched: int
    protected: int
    sample: list[dict[str, Any]]
    delete: Callable[[socket.socket, Callable[[int, int], None] | None], tuple[int, int]]


def _nets(cidrs: str | None) -> tuple[Net, ...] | None:
    if not cidrs:
        return None
    out = []
    for c in cidrs.split(","):
        if c.strip():
            n = ipaddress.ip_network(c.strip(), strict=False)
            out.append((n.version, n.network_address.packed, n.prefixlen))
    return tuple(out) or None


def selection_args(states: set[str], port: int | None, src: str | None, dst: str | None) -> AggArgs:
    """The aggregator's arguments for a flush: grouped by protocol and destination port (the sample)."""
    return ((F_PROTO, F_DPORT), None if "ALL" in states else tuple(s.encode() for s in sorted(states)), None,
            -1 if port is None else port, _nets(src), _nets(dst))


def flush(ref: Any, states: set[str], port: int | None, src: str | None, dst: str | None,
          include_established: bool, dry_run: bool, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Select (and unless ``dry_run`` delete) the entries of netns ``ref``; the flush document. ``progress``
    is told what is being done (the dump, then the entries deleted so far of all to delete)."""
    say = progress or (lambda text: None)

    def sock() -> socket.socket:
        return socket.socket(fileno=nsmod.socket_in(ref, socket.AF_NETLINK, socket.SOCK_RAW,
                                                    ctnetlink.NETLINK_NETFILTER))

    args = selection_args(states, port, src, dst)
    select = _select_fast if accelerated() else _select_python
    say(f"reading the entries of netns {ref.name}")
    sel = select(sock, make_aggregator(args), include_established)
    deleted = gone = 0
    if not dry_run and sel.matched:
        s = sock()

        def show(done: int, of: int) -> None:
            say(f"deleting entries: {done:,} of {of:,}")

        show(0, sel.matched)
        try:
            deleted, gone = sel.delete(s, show)
        finally:
            s.close()
    after = _count_now(ref) if not dry_run else sel.before
    return {"schema": 1, "netns": ref.name, "before": sel.before, "matched": sel.matched,
            "protected_established": sel.protected, "deleted": deleted, "already_gone": gone, "after": after,
            "dry_run": dry_run, "sample": sel.sample}


def _select_fast(sock: Callable[[], socket.socket], agg: Aggregator, include_established: bool) -> Selection:
    """One dump through the C decoder: the same filters as top's, CT_DELETE requests built from the
    dump's own attributes."""
    from ctdoctor.listing._fastscan import netlink_select  # optional: absent without a compiler

    before = matched = protected = 0
    parts: list[bytes] = []
    s = sock()
    try:
        for buf in ctnetlink.dump_buffers(s):
            n, m, p, _bad, done, req = netlink_select(agg, buf, not include_established, matched + 1,  # type: ignore[arg-type]
                                                      ctnetlink.ACK_EVERY)
            before, matched, protected = before + n, matched + m, protected + p
            parts.append(req)
            if done:
                break
    except OSError as e:
        raise ctnetlink.CtnetlinkError(f"ctnetlink dump failed: {e.strerror or e}") from None
    finally:
        s.close()
    requests = b"".join(parts)
    return Selection(before, matched, protected, sample(agg),
                     lambda sk, show: ctnetlink.send_deletes(sk, requests, progress=show))


def _select_python(sock: Callable[[], socket.socket], agg: Aggregator, include_established: bool) -> Selection:
    """Without the C extension: every entry decoded in Python (slower, the same result)."""
    s = sock()
    try:
        entries = list(ctnetlink.entries_from(ctnetlink.dump_buffers(s)))
    finally:
        s.close()
    assert isinstance(agg, PyAggregator)
    matched, protected = [], 0
    for e in entries:
        ok, prot = matches(e, agg.filter, include_established)
        protected += prot
        if ok:
            agg.take(entry_fields(e), 1)
            matched.append(e)
    return Selection(len(entries), len(matched), protected, sample(agg),
                     lambda sk, show: _delete_in_parts(sk, matched, show))


def _delete_in_parts(sk: socket.socket, entries: list[Entry], show: Callable[[int, int], None] | None,
                     part: int = 16384) -> tuple[int, int]:
    """``ctnetlink.delete_entries`` a part at a time, saying how many are done after each."""
    deleted = gone = 0
    for i in range(0, len(entries), part):
        d, g = ctnetlink.delete_entries(sk, entries[i:i + part])
        deleted, gone = deleted + d, gone + g
        if show is not None:
            show(min(i + part, len(entries)), len(entries))
    return deleted, gone


def matches(e: Entry, flt: Filter, include_established: bool) -> tuple[bool, bool]:
    """(to delete, kept as ASSURED ESTABLISHED) of one decoded entry: flush's rules, as the C
    selection applies them."""
    if e.state == "ESTABLISHED" and e.assured and not include_established:
        return False, True
    return flt.keeps(entry_fields(e)), False


def sample(agg: Aggregator, limit: int = 10) -> list[dict[str, Any]]:
    """The most common (protocol, destination port) groups of what was matched, with their state mix."""
    out = []
    for key, count, _opk, _ob, _rpk, _rb, labels in agg.top(limit)[1]:
        proto, _, dport = key.partition(SEP)
        states = {lab.decode(): n for lab, n in sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))}
        out.append({"count": count, "what": what(proto.decode("utf-8", "replace"), int(dport) if dport else None,
                                                 states)})
    return out


def what(proto: str, dport: int | None, states: dict[str, int]) -> str:
    """``udp port 53 (UNREPLIED 29,000, ...)``: a group of the entries a flush matches."""
    port = f" port {dport}" if dport else ""
    mix = ", ".join(f"{k} {v:,}" for k, v in sorted(states.items(), key=lambda kv: -kv[1])[:3])
    return f"{proto}{port}" + (f" ({mix})" if mix else "")


def _count_now(ref: Any) -> int | None:
    """The netns's nf_conntrack_count now (one small file, not another dump)."""
    try:
        fd = nsmod.open_in(ref, "/proc/sys/net/netfilter/nf_conntrack_count")
    except OSError:
        return None
    try:
        return int(os.read(fd, 64) or b"0")
    except ValueError:
        return None
    finally:
        os.close(fd)
