"""Facts the checks need beyond the Snapshot, gathered from the host image or the live host.

Checks get these through ``checks.base.Context`` (which sees only the ``Facts`` protocol):
the listing's state mix and top keys (one read of the listing per netns, only when a
check asks), ESTABLISHED socket counts, the distribution, the expectation table.
This module may read the root; checks may not.
"""

from __future__ import annotations

import os
import re

from ctdoctor.diagnose.checks.base import ListingSummary
from ctdoctor.sources.snapshot import NetnsState, Snapshot

TUNNEL_PORTS = {"vxlan": 4789, "geneve": 6081, "vxlan-8472": 8472}


# Above this many entries a sampling summary counts the top sources and destinations on a sample of
# about SAMPLE_SIZE entries: a big table has about as many distinct addresses as entries, and counting
# them all is most of the exporter's refresh memory. A share of 30 % (CT013) is then known to +-1 %.
SAMPLE_ABOVE = 65536
SAMPLE_SIZE = 16384


class HostFacts:
    def __init__(self, snap: Snapshot, root=None, live: bool = False, prefer_netlink: bool = False,
                 frugal: bool = False):
        self.snap = snap
        self.root = root
        self.live = live
        # the exporter's refresh reads live listings over ctnetlink (C decoder) before /proc
        self.prefer_netlink = prefer_netlink and live
        # the exporter's refresh spends the least CPU and memory: a big table's top sources and
        # destinations are counted on a sample (it publishes no address), a dump is read in one thread
        self.frugal = frugal
        self._summaries: dict[str, ListingSummary | None] = {}
        self._summary_errors: dict[str, str] = {}
        self._sockets: dict[str, int | None] = {}
        self._socket_sources: dict[str, str] = {}


    def summary(self, st: NetnsState) -> ListingSummary | None:
        if st.name in self._summaries:
            return self._summaries[st.name]
        if self.live and st.count == 0:
            # an empty table lists nothing: no read (on a node, most pods' namespaces are empty)
            self._summaries[st.name] = ListingSummary(0, False, "nf_conntrack_count is 0", {}, {}, {})
            return self._summaries[st.name]
        result = None
        try:
            got = self._netlink(st) if self.prefer_netlink else None
            if got is None:
                got = st.open_entries()
            if got is None and self.live:
                from ctdoctor.sources import ctnetlink

                got = ctnetlink.listing_source(st)
            if got is not None:
                import time

                from ctdoctor.sources.listing_files import tally_stream_multi
                from ctdoctor.top.query import parse_query
                from ctdoctor.top.rows import rows

                started = time.monotonic()
                stream, label, tailed = got
                qs = [parse_query(k, None, None, None, None, None) for k in ("state", "proto", "src", "dst", "dport")]
                every = 1
                if self.frugal and (st.count or 0) > SAMPLE_ABOVE:
                    every = -(-(st.count or 0) // SAMPLE_SIZE)
                    qs[2].every = qs[3].every = every
                if self.frugal:
                    stream.overlap = False
                with stream:
                    ts = tally_stream_multi(stream, qs, skip_first_partial=tailed)
                # tunnel endpoints (VXLAN, Geneve, flannel's VXLAN) by destination port, from the dport groups
                _, dports = rows(ts[4], qs[4], 0)
                wanted_ports = {port: name for name, port in TUNNEL_PORTS.items()}
                tunnels = {wanted_ports[r["key"]["dport"]]: r["count"] for r in dports
                           if r["key"]["dport"] in wanted_ports}
                read_seconds = time.monotonic() - started
                # reading the table frees the expired entries it passes: the count read now is the one
                # the listing can be compared with (before it, the garbage collector's lag is in it)
                after = st.view.read_now(["proc/sys/net/netfilter/nf_conntrack_count"]) if self.live and st.view \
                    else {}
                tops = {}
                proto_states: dict[tuple[str, str], int] = {}
                for k, q, t in zip(("state", "proto", "src", "dst", "dport"), qs, ts, strict=True):
                    _, rs = rows(t, q, 0 if k in ("state", "proto") else 5)
                    # a key an entry lacks (ICMP has no port) stays None, never the string "None"
                    tops[k] = [(None if r["key"][k] is None else str(r["key"][k]), r["count"] * q.every)
                               for r in rs]
                    if k == "proto":  # each protocol's row carries its state mix
                        for r in rs:
                            for state, n in r["states"].items():
                                proto_states[(str(r["key"]["proto"]), state)] = n
                listed = ts[0].total
                sample = bool(tailed)  # sosreport kept only the tail of a long listing
                result = ListingSummary(listed, sample, label, {str(v): n for v, n in tops.pop("state")},
                                        {str(v): n for v, n in tops.pop("proto")},
                                        tops, ts[0].unreadable, proto_states, tunnels)
                result.top_every = every
                if after:
                    from ctdoctor.model.kernel import parse_int

                    result.count_after = parse_int(next(iter(after.values())))
                    result.read_seconds = round(read_seconds, 3)
                footer = st.view.listing_footer() if st.view is not None else None
                if footer is not None:
                    version, shown = footer
                    result.tool = "conntrack-tools " + ".".join(map(str, version))
                    if shown > result.listed + result.unreadable:
                        result.sample = True  # the tool printed more than the file holds: it was cut
                        self.snap.notes.append(f"{label}: {result.listed} entries kept of the {shown} "
                                               f"{result.tool} printed: read as a sample")
                    if version < (1, 4, 7):
                        result.families = "ipv4"  # conntrack -L without -f lists IPv4 only before 1.4.7
                gre = result.protos.get("gre", 0)
                if gre:
                    result.tunnels["gre"] = gre
                if ts[0].unreadable:
                    line, text = ts[0].first_bad or (0, "")
                    self.snap.notes.append(f"{label}: {ts[0].unreadable} line(s) were not conntrack entries and "
                                           f"were skipped (first: line {line}: {text!r})")
        except Exception as e:
            self._summary_errors[st.name] = f"{type(e).__name__}: {e}"
        self._summaries[st.name] = result
        return result

    def warm(self, states: list[NetnsState]) -> None:
        """Read these namespaces' listings now, several at a time (the doctor does it while it waits for
        its second counter sample)."""
        from concurrent.futures import ThreadPoolExecutor

        todo = [st for st in states if st.name not in self._summaries]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=min(4, len(todo)), thread_name_prefix="ctdoctor-listing") as pool:
            list(pool.map(self.summary, todo))

    def summary_missing_reason(self, st: NetnsState) -> str:
        return self._summary_errors.get(st.name) or "no entry listing (live /proc, ctnetlink, or a saved one)"


    def established_sockets(self, st: NetnsState) -> int | None:
        """ESTABLISHED TCP sockets in the netns: ``ss -tanH state established`` live; in a sosreport
        what sos captures (``ss -s``'s ``estab N``, else counting ``ESTAB`` rows of ``ss -peaonmi``)."""
        if st.name in self._sockets:
            return self._sockets[st.name]
        n, src = None, None
        if st.view is not None:
            cap = st.view.capture("networking", "ss -tanH state established")
            if cap is not None and "Usage" not in cap.text and not self._is_error(cap.text):
                n, src = sum(1 for ln in cap.text.splitlines() if ln.strip()), cap.source
            if n is None and not self.live:
                cap = st.view.capture("networking", "ss -s")
                m = re.search(r"^TCP:\s+\d+ \(estab (\d+),", cap.text, re.MULTILINE) if cap else None
                if m and cap:
                    n, src = int(m.group(1)), cap.source
            if n is None and not self.live:
                cap = st.view.capture("networking", "ss -peaonmi")
                if cap and cap.text.lstrip().startswith("Netid"):
                    n = sum(1 for ln in cap.text.splitlines() if re.match(r"tcp\s+ESTAB\s", ln))
                    src = cap.source
        self._sockets[st.name] = n
        self._socket_sources[st.name] = src or "ss -tanH state established"
        return n

    def sockets_source(self, st: NetnsState) -> str:
        return self._socket_sources.get(st.name, "ss -tanH state established")

    @staticmethod
    def _is_error(text: str) -> bool:
        t = text.lstrip()
        return t.startswith(("Error", "ss:", "Cannot", "Usage"))


    def distro(self) -> str:
        """'rhel' (RHEL, CentOS, Fedora, Rocky, Alma, SUSE-like sysconfig), 'debian', or 'other'."""
        text = ""
        if self.root is not None:
            text = self.root.read_text("etc/os-release") or ""
        # whole IDs: a substring test took Solus ("solus" holds "ol") for Oracle Linux
        ids = set(" ".join(re.findall(r'^(?:ID|ID_LIKE)="?([^"\n]*)"?', text, re.MULTILINE)).lower().split())
        if ids & {"rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn", "suse", "sles", "opensuse"}:
            return "rhel"
        if ids & {"debian", "ubuntu"}:
            return "debian"
        if self.snap.persisted.iptables_config:
            return "rhel"
        return "other"

    @staticmethod
    def _netlink(st: NetnsState):
        from ctdoctor.sources import ctnetlink

        try:
            return ctnetlink.listing_source(st)
        except ctnetlink.CtnetlinkError:
            return None  # then /proc

    def event_listeners(self, st: NetnsState) -> list[dict]:
        """NETLINK_NETFILTER sockets subscribed to groups in the netns (``/proc/net/netlink``, read by its
        header's names), with unread bytes and drops, and the process that holds each (pid, comm) found
        through ``/proc/*/fd``. Live only; [] when unreadable."""
        if not self.live or st.view is None:
            return []
        text = st.view.read_now(["proc/net/netlink"]).get("proc/net/netlink", "")
        lines = text.splitlines()
        if not lines:
            return []
        cols = lines[0].split()
        socks: dict[str, dict[str, int | str]] = {}
        for ln in lines[1:]:
            row = dict(zip(cols, ln.split(), strict=False))
            try:
                if row.get("Eth") == "12" and int(row.get("Groups", "0"), 16):
                    socks[row["Inode"]] = {"inode": int(row["Inode"]), "portid": int(row["Pid"]),
                                           "unread_bytes": int(row["Rmem"]), "drops": int(row.get("Drops", "0"))}
            except (KeyError, ValueError):
                continue
        if socks and self.root is not None:
            for pid in self.root.listdir("proc"):
                if not pid.isdigit():
                    continue
                for fd in self.root.listdir(f"proc/{pid}/fd"):
                    try:
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    except OSError:
                        continue
                    m = re.fullmatch(r"socket:\[(\d+)\]", target)
                    if m and m.group(1) in socks and "pid" not in socks[m.group(1)]:
                        comm = (self.root.read_text(f"proc/{pid}/comm", limit=64) or "").strip()
                        socks[m.group(1)].update(pid=int(pid), comm=comm)
        return sorted(socks.values(), key=lambda s: -int(s["unread_bytes"]))

    def ovs_conntrack(self) -> tuple[dict[str, int], str] | None:
        """Tunnel entries in Open vSwitch's conntrack dump (sos openvswitch plugin), when captured."""
        if self.root is None or self.live:
            return None
        for cmd in ("ovs-appctl dpctl/dump-conntrack -m", "ovs-appctl dpctl/dump-conntrack",
                    "ovs-dpctl dump-conntrack -m", "ovs-dpctl dump-conntrack"):
            cap = self.root.capture("openvswitch", cmd)
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

    def expectations(self) -> tuple[int | None, str | None]:
        if self.root is None:
            return None, None
        text = self.root.read_text("proc/net/nf_conntrack_expect")
        if text is None:
            return None, None
        return sum(1 for ln in text.splitlines() if ln.strip()), "/proc/net/nf_conntrack_expect"


def context(snap: Snapshot, root=None, live: bool = False, prefer_netlink: bool = False,
            frugal: bool = False):
    """The checks' Context over this snapshot, its facts read from ``root``."""
    from ctdoctor.diagnose.checks.base import Context

    return Context(snap, HostFacts(snap, root, live, prefer_netlink, frugal))
