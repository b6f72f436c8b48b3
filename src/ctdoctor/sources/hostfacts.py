"""Reading what the checks need beyond the Snapshot: a netns's listing (tallied), its ESTABLISHED
sockets, its conntrack event listeners; the host's distribution, expectation table and Open vSwitch
dump. ``diagnose.facts`` calls these before any check runs and keeps what they return as plain data.

A read that fails the expected way (a missing file, no permission, a netns gone, ctnetlink refused)
raises ``OSError`` or a ``CtdError``; the caller turns those into "not enough data" with the reason.
Anything else is a bug and is not caught.
"""

from __future__ import annotations

import os
import re
import time

from ctdoctor.errors import CtdError
from ctdoctor.listing.query import Query, parse_query
from ctdoctor.listing.rows import rows
from ctdoctor.listing.tally import Tally
from ctdoctor.model.kernel import parse_int
from ctdoctor.model.persisted import Persisted
from ctdoctor.model.snapshot import Listener, ListingSummary, NetnsState
from ctdoctor.sources.hostroot import HostRoot
from ctdoctor.sources.listing_files import tally_stream_multi
from ctdoctor.sources.snapshot import ref_of, view_of
from ctdoctor.sources.views import Listing

TUNNEL_PORTS = {"vxlan": 4789, "geneve": 6081, "vxlan-8472": 8472}

# Above this many entries a sampling summary counts the top sources and destinations on a sample of
# about SAMPLE_SIZE entries: a big table has about as many distinct addresses as entries, and counting
# them all is most of the exporter's refresh memory. A share of 30 % (CT013) is then known to +-1 %.
SAMPLE_ABOVE = 65536
SAMPLE_SIZE = 16384
KEYS = ("state", "proto", "src", "dst", "dport")

# what a read can fail with that is not a bug: it becomes "not enough data" with the reason
EXPECTED = (OSError, CtdError)


def open_listing(st: NetnsState, live: bool, prefer_netlink: bool) -> Listing | None:
    """(stream, label, tailed) of this netns's entry listing, or None when there is none: live over
    ctnetlink first when ``prefer_netlink``, then /proc or the saved listing, then ctnetlink."""
    ref = ref_of(st) if live else None
    if ref is None:  # an image, or a live netns not pinned: its saved or /proc listing
        view = view_of(st)
        return view.open_listing() if view is not None else None
    # imported here: netlink sockets (socket, selectors, the entry decoder) only for a live host
    from ctdoctor.sources import ctnetlink

    if prefer_netlink:
        try:
            return ctnetlink.listing_source(ref)
        except ctnetlink.CtnetlinkError:
            pass  # then /proc
    view = view_of(st)
    got = view.open_listing() if view is not None else None
    if got is None:
        got = ctnetlink.listing_source(ref)
    return got


def has_listing(st: NetnsState) -> bool:
    """The image holds this netns's entry listing (so `top --root` can read it)."""
    view = view_of(st)
    got = view.open_listing() if view is not None else None
    if got is None:
        return False
    got[0].close()
    return True


def listing_summary(st: NetnsState, notes: list[str], live: bool = False, prefer_netlink: bool = False,
                    frugal: bool = False) -> ListingSummary | None:
    """This netns's listing, read once and tallied by state, protocol, source, destination and port;
    None when there is no listing. ``frugal``: a big table's sources and destinations on a sample,
    one reading thread (the exporter's refresh). Notes on what was skipped go to ``notes``."""
    if live and st.count == 0:
        # an empty table lists nothing: no read (on a node, most pods' namespaces are empty)
        return ListingSummary(0, False, "nf_conntrack_count is 0", {}, {}, {})
    got = open_listing(st, live, prefer_netlink and live)
    if got is None:
        return None
    started = time.monotonic()
    stream, label, tailed = got
    qs = [parse_query(k, None, None, None, None, None) for k in KEYS]
    every = 1
    if frugal and (st.count or 0) > SAMPLE_ABOVE:
        every = -(-(st.count or 0) // SAMPLE_SIZE)
        qs[2].every = qs[3].every = every
    if frugal:
        stream.overlap = False
    with stream:
        ts = tally_stream_multi(stream, qs, skip_first_partial=tailed)
    read_seconds = time.monotonic() - started
    view = view_of(st)
    # reading the table frees the expired entries it passes: the count read now is the one the listing
    # can be compared with (before it, the garbage collector's lag is in it)
    after = view.read_now(["proc/sys/net/netfilter/nf_conntrack_count"]) if live and view is not None else {}
    result = _summary(ts, qs, label, bool(tailed))  # sosreport kept only the tail of a long listing
    result.top_every = every
    if after:
        result.count_after = parse_int(next(iter(after.values())))
        result.read_seconds = round(read_seconds, 3)
    footer = view.listing_footer() if view is not None else None
    if footer is not None:
        version, shown = footer
        result.tool = "conntrack-tools " + ".".join(map(str, version))
        if shown > result.listed + result.unreadable:
            result.sample = True  # the tool printed more than the file holds: it was cut
            notes.append(f"{label}: {result.listed} entries kept of the {shown} {result.tool} printed: "
                         "read as a sample")
        if version < (1, 4, 7):
            result.families = "ipv4"  # conntrack -L without -f lists IPv4 only before 1.4.7
    gre = result.protos.get("gre", 0)
    if gre:
        result.tunnels["gre"] = gre
    if ts[0].unreadable:
        line, text = ts[0].first_bad or (0, "")
        notes.append(f"{label}: {ts[0].unreadable} line(s) were not conntrack entries and were skipped "
                     f"(first: line {line}: {text!r})")
    return result


def _summary(ts: list[Tally], qs: list[Query], label: str, sample: bool) -> ListingSummary:
    """The tallies of one listing (one per key of KEYS) as a ListingSummary."""
    # tunnel endpoints (VXLAN, Geneve, flannel's VXLAN) by destination port, from the dport groups
    _, dports = rows(ts[4], qs[4], 0)
    wanted_ports = {port: name for name, port in TUNNEL_PORTS.items()}
    tunnels = {wanted_ports[r["key"]["dport"]]: r["count"] for r in dports if r["key"]["dport"] in wanted_ports}
    tops: dict[str, list[tuple[str | None, int]]] = {}
    proto_states: dict[tuple[str, str], int] = {}
    for k, q, t in zip(KEYS, qs, ts, strict=True):
        _, rs = rows(t, q, 0 if k in ("state", "proto") else 5)
        # a key an entry lacks (ICMP has no port) stays None, never the string "None"
        tops[k] = [(None if r["key"][k] is None else str(r["key"][k]), r["count"] * q.every) for r in rs]
        if k == "proto":  # each protocol's row carries its state mix
            for r in rs:
                for state, n in r["states"].items():
                    proto_states[(str(r["key"]["proto"]), state)] = n
    states = {str(v): n for v, n in tops.pop("state")}
    protos = {str(v): n for v, n in tops.pop("proto")}
    return ListingSummary(ts[0].total, sample, label, states, protos, tops, ts[0].unreadable, proto_states, tunnels)


def _is_error(text: str) -> bool:
    t = text.lstrip()
    return t.startswith(("Error", "ss:", "Cannot", "Usage"))


def established_sockets(st: NetnsState, live: bool) -> tuple[int | None, str]:
    """ESTABLISHED TCP sockets in the netns and where the number came from: ``ss -tanH state
    established`` live; in a sosreport what sos captures (``ss -s``'s ``estab N``, else counting
    ``ESTAB`` rows of ``ss -peaonmi``)."""
    n: int | None = None
    src: str | None = None
    view = view_of(st)
    if view is not None:
        cap = view.capture("networking", "ss -tanH state established")
        if cap is not None and "Usage" not in cap.text and not _is_error(cap.text):
            n, src = sum(1 for ln in cap.text.splitlines() if ln.strip()), cap.source
        if n is None and not live:
            cap = view.capture("networking", "ss -s")
            m = re.search(r"^TCP:\s+\d+ \(estab (\d+),", cap.text, re.MULTILINE) if cap else None
            if m and cap:
                n, src = int(m.group(1)), cap.source
        if n is None and not live:
            cap = view.capture("networking", "ss -peaonmi")
            if cap and cap.text.lstrip().startswith("Netid"):
                n = sum(1 for ln in cap.text.splitlines() if re.match(r"tcp\s+ESTAB\s", ln))
                src = cap.source
    return n, src or "ss -tanH state established"


def event_listeners(st: NetnsState, root: HostRoot | None) -> list[Listener]:
    """NETLINK_NETFILTER sockets subscribed to groups in the live netns (``/proc/net/netlink``, read by
    its header's names), with unread bytes and drops, and the process that holds each (pid, comm)
    found through ``/proc/*/fd``; [] when unreadable."""
    view = view_of(st)
    if view is None:
        return []
    text = view.read_now(["proc/net/netlink"]).get("proc/net/netlink", "")
    lines = text.splitlines()
    if not lines:
        return []
    cols = lines[0].split()
    socks: dict[str, Listener] = {}
    for ln in lines[1:]:
        row = dict(zip(cols, ln.split(), strict=False))
        try:
            if row.get("Eth") == "12" and int(row.get("Groups", "0"), 16):
                socks[row["Inode"]] = {"inode": int(row["Inode"]), "portid": int(row["Pid"]),
                                       "unread_bytes": int(row["Rmem"]), "drops": int(row.get("Drops", "0"))}
        except (KeyError, ValueError):
            continue
    if socks and root is not None:
        _holders(socks, root)
    return sorted(socks.values(), key=lambda s: -int(s["unread_bytes"]))


def _holders(socks: dict[str, Listener], root: HostRoot) -> None:
    """Add the pid and comm of the process holding each socket (by inode), through /proc/*/fd."""
    for pid in root.listdir("proc"):
        if not pid.isdigit():
            continue
        for fd in root.listdir(f"proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and m.group(1) in socks and "pid" not in socks[m.group(1)]:
                comm = (root.read_text(f"proc/{pid}/comm", limit=64) or "").strip()
                socks[m.group(1)].update(pid=int(pid), comm=comm)


def distro(root: HostRoot | None, persisted: Persisted) -> str:
    """'rhel' (RHEL, CentOS, Fedora, Rocky, Alma, SUSE-like sysconfig), 'debian', or 'other'."""
    text = ""
    if root is not None:
        text = root.read_text("etc/os-release") or ""
    # whole IDs: a substring test took Solus ("solus" holds "ol") for Oracle Linux
    ids = set(" ".join(re.findall(r'^(?:ID|ID_LIKE)="?([^"\n]*)"?', text, re.MULTILINE)).lower().split())
    if ids & {"rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn", "suse", "sles", "opensuse"}:
        return "rhel"
    if ids & {"debian", "ubuntu"}:
        return "debian"
    if persisted.iptables_config:
        return "rhel"
    return "other"


def ovs_conntrack(root: HostRoot | None, live: bool) -> tuple[dict[str, int], str] | None:
    """Tunnel entries in Open vSwitch's conntrack dump (sos openvswitch plugin), when captured."""
    if root is None or live:
        return None
    for cmd in ("ovs-appctl dpctl/dump-conntrack -m", "ovs-appctl dpctl/dump-conntrack",
                "ovs-dpctl dump-conntrack -m", "ovs-dpctl dump-conntrack"):
        cap = root.capture("openvswitch", cmd)
        if cap is None:
            continue
        counts: dict[str, int] = {}
        for ln in cap.text.splitlines():
            m = re.match(r"(udp|gre|47),orig=\(src=[^,]*,dst=[^,]*(?:,sport=(\d+),dport=(\d+))?", ln.strip())
            if not m:
                continue
            if m.group(1) != "udp":
                counts["gre"] = counts.get("gre", 0) + 1
                continue
            ports = {int(m.group(2) or 0), int(m.group(3) or 0)}
            for name, port in TUNNEL_PORTS.items():
                if port in ports:
                    counts[name] = counts.get(name, 0) + 1
        return counts, cap.source
    return None


def expectations(root: HostRoot | None) -> tuple[int | None, str | None]:
    """(entries in the expectation table, its source), or (None, None)."""
    if root is None:
        return None, None
    text = root.read_text("proc/net/nf_conntrack_expect")
    if text is None:
        return None, None
    return sum(1 for ln in text.splitlines() if ln.strip()), "/proc/net/nf_conntrack_expect"
