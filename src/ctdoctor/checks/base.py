"""What checks get (a Context over the Snapshot) and what they give (Findings).

Checks are pure: ``run(ctx) -> Iterable[Finding | Unknown]``. Everything a
check needs beyond the Snapshot (the listing's state mix and top keys, socket
counts, the distribution's paths) is computed lazily by the Context, once,
and shared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ctdoctor import kernel
from ctdoctor.snapshot import NetnsState, Snapshot
from ctdoctor.sources.sysctl import NF, parse_int

CRITICAL, WARNING, INFO = "critical", "warning", "info"
SEVERITY_ORDER = {CRITICAL: 0, WARNING: 1, INFO: 2}


@dataclass
class Finding:
    id: str
    severity: str
    title: str
    summary: str
    netns: str | None = None
    evidence: dict = field(default_factory=dict)
    explanation: str = ""
    fix: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"id": self.id, "severity": self.severity, "title": self.title, "netns": self.netns,
                "summary": self.summary, "evidence": self.evidence, "explanation": self.explanation,
                "fix": self.fix}


@dataclass
class Unknown:
    """A check that did not have the data it needs: 'not enough data', never a guess."""

    id: str
    reason: str
    netns: str | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "netns": self.netns, "reason": self.reason}


@dataclass
class ListingSummary:
    listed: int
    sample: bool  # the listing was cut (sosreport tail): counts are of a sample
    source: str
    states: dict[str, int]
    protos: dict[str, int]
    top: dict[str, list[tuple[str, int]]]  # src/dst/dport -> [(value, count)] largest first
    unreadable: int = 0  # lines skipped because they were not entries
    proto_states: dict[tuple[str, str], int] = field(default_factory=dict)  # (proto, state mix label) -> n


def ev(value, source: str | None = None):
    """An evidence item: the value and the file it came from."""
    return {"value": value, "source": source} if source else {"value": value}


class Context:
    def __init__(self, snap: Snapshot, root=None, live: bool = False):
        self.snap = snap
        self.root = root
        self.live = live
        self._summaries: dict[str, ListingSummary | None] = {}
        self._summary_errors: dict[str, str] = {}
        self._sockets: dict[str, int | None] = {}
        self._socket_sources: dict[str, str] = {}

    # ---- settings ----------------------------------------------------------

    @property
    def version(self):
        return self.snap.version

    def setting(self, short: str, st: NetnsState | None = None) -> int | None:
        src = st.settings if st is not None and st.settings else self.snap.settings
        v = parse_int(src.get(NF + short))
        if v is None and short == "nf_conntrack_max":
            v = parse_int(self.snap.settings.get("net.nf_conntrack_max"))
        return v

    def setting_source(self, short: str, st: NetnsState | None = None) -> str:
        ns = st or self.snap.init
        return (ns.sources.get(NF + short) if ns else None) or "net.netfilter." + short

    @property
    def namespaces(self) -> list[NetnsState]:
        return self.snap.namespaces

    def global_max(self) -> int | None:
        return self.setting("nf_conntrack_max")

    # ---- the listing -----------------------------------------------------------

    def summary(self, st: NetnsState) -> ListingSummary | None:
        if st.name in self._summaries:
            return self._summaries[st.name]
        result = None
        try:
            got = st.open_entries()
            if got is None and self.live:
                from ctdoctor.sources import ctnetlink

                got = ctnetlink.listing_source(st)
            if got is not None:
                from ctdoctor.top import parse_query, tally_stream_multi

                stream, label, tailed = got
                qs = [parse_query(k, None, None, None, None, None) for k in ("state", "proto", "src", "dst", "dport")]
                with stream:
                    ts = tally_stream_multi(stream, qs, skip_first_partial=tailed)
                tops = {}
                proto_states: dict[tuple[str, str], int] = {}
                for k, q, t in zip(("state", "proto", "src", "dst", "dport"), qs, ts):
                    from ctdoctor.top import rows

                    _, rs = rows(t, q, 0 if k in ("state", "proto") else 5)
                    tops[k] = [(str(r["key"][k]), r["count"]) for r in rs]
                    if k == "proto":  # each protocol's row carries its state mix
                        for r in rs:
                            for state, n in r["states"].items():
                                proto_states[(str(r["key"]["proto"]), state)] = n
                listed = ts[0].total
                sample = bool(tailed)  # sosreport kept only the tail of a long listing
                result = ListingSummary(listed, sample, label, dict(tops.pop("state")), dict(tops.pop("proto")),
                                        tops, ts[0].unreadable, proto_states)
                if ts[0].unreadable:
                    line, text = ts[0].first_bad or (0, "")
                    self.snap.notes.append(f"{label}: {ts[0].unreadable} line(s) were not conntrack entries and "
                                           f"were skipped (first: line {line}: {text!r})")
        except Exception as e:  # noqa: BLE001 - a listing problem makes the listing checks 'not enough data'
            self._summary_errors[st.name] = f"{type(e).__name__}: {e}"
        self._summaries[st.name] = result
        return result

    def summary_missing_reason(self, st: NetnsState) -> str:
        return self._summary_errors.get(st.name) or "no entry listing (live /proc, ctnetlink, or a saved one)"

    # ---- sockets ------------------------------------------------------------------

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
                m = re.search(r"^TCP:\s+\d+ \(estab (\d+),", cap.text, re.M) if cap else None
                if m:
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

    # ---- host facts -----------------------------------------------------------------

    def distro(self) -> str:
        """'rhel' (RHEL, CentOS, Fedora, Rocky, Alma, SUSE-like sysconfig), 'debian', or 'other'."""
        text = ""
        if self.root is not None:
            text = self.root.read_text("etc/os-release") or ""
        ids = " ".join(re.findall(r'^(?:ID|ID_LIKE)="?([^"\n]*)"?', text, re.M)).lower()
        if any(w in ids for w in ("rhel", "fedora", "centos", "rocky", "almalinux", "ol")):
            return "rhel"
        if any(w in ids for w in ("debian", "ubuntu")):
            return "debian"
        if self.snap.persisted.iptables_config:
            return "rhel"
        return "other"

    def module_state(self, name: str) -> str:
        m = self.snap.modules.get(name)
        return m.state if m else "unknown"

    def entry_size(self) -> tuple[int, bool]:
        if self.snap.entry_size:
            return self.snap.entry_size, False
        return kernel.estimated_entry_size(self.version), True


def fmt_pct(x: float | None) -> str:
    return "?" if x is None else f"{x * 100:.1f}%"


def sysctl_fix(key_short: str, value) -> str:
    return f"sysctl -w net.netfilter.{key_short}={value}"


def apply_hint(*args: str) -> str:
    return "ctdoctor apply " + " ".join(args) + "   # persist it: sysctl.d, modprobe.d, udev re-apply rule"
