"""What checks get (a Context over the Snapshot and the Facts) and what they give (Findings).

Checks are pure: ``run(ctx) -> Iterable[Finding | Unknown]``. Everything a check needs beyond
the Snapshot (the listing's state mix and top keys, socket counts, the distribution) is in a
``Facts`` gathered before the checks run (``ctdoctor.diagnose.facts``); a check that reads
a listing, sockets or event listeners says which in its ``needs(ctx)``. A check never reads
the host: both are plain data (``ctdoctor.model.snapshot``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

from ctdoctor.model import kernel, thresholds
from ctdoctor.model.kernel import NF, TABLE_FULL, parse_int
from ctdoctor.model.kernlog import KernelLogEvent
from ctdoctor.model.modules import ModuleState
from ctdoctor.model.snapshot import Facts, Listener, ListingSummary, NetnsState, NotGathered, Snapshot

__all__ = ["CRITICAL", "INFO", "WARNING", "Context", "Evidence", "Facts", "Finding", "ListingSummary", "Needs",
           "NetnsState", "NotGathered", "Severity", "Snapshot", "Unknown", "apply_hint", "ev", "fmt_pct",
           "sysctl_fix"]


SMALL_TABLE = 100  # entries: below this, no listing-based check can fire


class Severity(StrEnum):
    """A finding's severity (its JSON value is the lower-case name)."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


CRITICAL, WARNING, INFO = Severity.CRITICAL, Severity.WARNING, Severity.INFO
SEVERITY_ORDER = {CRITICAL: 0, WARNING: 1, INFO: 2}


@dataclass
class Finding:
    id: str
    severity: Severity
    title: str
    summary: str
    netns: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    explanation: str = ""
    fix: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "title": self.title, "netns": self.netns,
                "summary": self.summary, "evidence": self.evidence, "explanation": self.explanation,
                "fix": self.fix}


@dataclass
class Unknown:
    """A check that did not have the data it needs: 'not enough data', never a guess."""

    id: str
    reason: str
    netns: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "netns": self.netns, "reason": self.reason}


class Evidence(TypedDict, total=False):
    """One evidence item of a finding: the value, and the file or command it came from."""

    value: Any
    source: str


def ev(value: Any, source: str | None = None) -> Evidence:
    """An evidence item: the value and the file it came from."""
    return {"value": value, "source": source} if source else {"value": value}


@dataclass
class Needs:
    """What a check will ask of the Facts, by netns name: gathered before it runs."""

    listings: set[str] = field(default_factory=set)  # listing summaries
    sockets: set[str] = field(default_factory=set)  # ESTABLISHED socket counts
    listeners: set[str] = field(default_factory=set)  # conntrack event listeners (live)
    plan_max: bool = False  # the max ``plan`` picks

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.listings | other.listings, self.sockets | other.sockets,
                     self.listeners | other.listeners, self.plan_max or other.plan_max)


class Context:
    """A check's view of the host: the Snapshot and the Facts, both plain data."""

    def __init__(self, snap: Snapshot, facts: Facts):
        self.snap = snap
        self.facts = facts
        self.live = facts.live
        self._split: tuple[dict[int, list[KernelLogEvent]], list[KernelLogEvent], list[NetnsState]] | None = None

    # ---- settings ----------------------------------------------------------

    @property
    def version(self) -> tuple[int, int, int] | None:
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

    # ---- facts gathered before the checks (the listing, sockets, host files) ------------

    def summary(self, st: NetnsState) -> ListingSummary | None:
        return self.facts.summary(st.name)

    @staticmethod
    def listing_matters(st: NetnsState, at_least: int = SMALL_TABLE) -> bool:
        """Whether a check needs this netns's listing: its count is unknown or at least ``at_least``
        (below that, no gap, pile-up or heavy hitter can reach a threshold), or it is the host's.
        On a node, most pods' tables hold a handful of entries: their listings are not read."""
        return st.count is None or st.count >= at_least or st.name == "init"

    def summary_missing_reason(self, st: NetnsState) -> str:
        return self.facts.summary_missing_reason(st.name)

    def established_sockets(self, st: NetnsState) -> int | None:
        return self.facts.established_sockets(st.name)

    def sockets_source(self, st: NetnsState) -> str:
        return self.facts.sockets_source(st.name)

    def distro(self) -> str:
        return self.facts.distro

    def event_listeners(self, st: NetnsState) -> list[Listener]:
        """Conntrack event listeners (NETLINK_NETFILTER sockets with groups) in the netns, with the
        process holding each and its unread bytes; live only."""
        return self.facts.event_listeners(st.name)

    def ovs_conntrack(self) -> tuple[dict[str, int], str] | None:
        """Tunnel entries counted in Open vSwitch's conntrack dump, and its source (images only)."""
        return self.facts.ovs

    def expectations(self) -> tuple[int | None, str | None]:
        """(entries in the expectation table, where that came from), or (None, None)."""
        return self.facts.expectations

    def plan_max(self) -> int:
        """The max ``plan`` picks (default headroom, no budget): what the doctor's fixes name, so the
        doctor, ``plan`` and ``apply --from-plan`` agree."""
        if self.facts.plan_max is None:
            raise NotGathered("the plan's max was not gathered")
        return self.facts.plan_max

    def module_state(self, name: str) -> ModuleState:
        m = self.snap.modules.get(name)
        return m.state if m else ModuleState.UNKNOWN

    def any_module_state(self, *names: str) -> ModuleState:
        """The state of a piece of the kernel that has had several module names over the years
        (2.6's ``ip_conntrack``/``ip_nat`` are today's ``nf_conntrack``/``nf_nat``): loaded if any of
        them is, else built in, else present; absent only when all are."""
        states = [self.module_state(n) for n in names]
        for want in (ModuleState.LOADED, ModuleState.BUILTIN, ModuleState.PRESENT, ModuleState.ABSENT):
            if want in states:
                return want
        return ModuleState.UNKNOWN

    def tracker_state(self) -> ModuleState:
        """The connection tracker: ``nf_conntrack``, or ``ip_conntrack`` on 2.6-era kernels."""
        return self.any_module_state("nf_conntrack", "ip_conntrack")

    def tracker_module(self) -> str:
        """The tracker's module name on this host (``ip_conntrack`` where that is what is loaded)."""
        return "ip_conntrack" if self.module_state("ip_conntrack") == ModuleState.LOADED and \
            self.module_state("nf_conntrack") != ModuleState.LOADED else "nf_conntrack"

    def nat_state(self) -> ModuleState:
        """NAT: ``nf_nat``, or ``ip_nat`` on 2.6-era kernels."""
        return self.any_module_state("nf_nat", "ip_nat")

    def partial(self, sources: list[str] | str) -> str | None:
        """The sos plugin that timed out (``sos_logs/ui.log``) whose capture these sources are, if any:
        its data is incomplete, so it is not judged."""
        for src in [sources] if isinstance(sources, str) else sources:
            for plugin in self.snap.incomplete:
                if f"sos_commands/{plugin}/" in src:
                    return plugin
        return None

    def rules_partial(self) -> str | None:
        """A timed-out sos plugin that held (or should have held) the firewall rules."""
        init = self.snap.init
        hit = self.partial(init.rules.sources) if init is not None else None
        if hit:
            return hit
        if init is not None and not init.rules.seen:
            return next((p for p in ("firewall_tables", "networking", "nftables") if p in self.snap.incomplete), None)
        return None

    def builtin_tracker(self) -> bool:
        """Conntrack built into the kernel: it is never unloaded, so nothing resets by reload."""
        return self.tracker_state() == ModuleState.BUILTIN or self.snap.module_support is False

    # ---- the kernel log, in time ------------------------------------------------------------

    def age(self, e: KernelLogEvent) -> float | None:
        """Seconds between a log line and the capture (None when either time is unknown)."""
        if e.at is None or self.snap.captured_at is None:
            return None
        return max(self.snap.captured_at - e.at, 0.0)

    def stale(self, e: KernelLogEvent) -> bool:
        a = self.age(e)
        return a is not None and a > thresholds.STALE_SECONDS

    def table_full_lines(self, st: NetnsState) -> tuple[list[KernelLogEvent], bool]:
        """This netns's ``table full`` kernel log lines, and whether they were matched by inference.

        6.18+ names a non-initial netns by inode. A line without one is the initial netns's or, on
        kernels that never name it, of whichever namespace is at the max. Offline a line may name
        an inode the image does not map (sos records no inodes): it goes to the one non-initial
        netns at the max, inferred, or stays unmapped (``unmapped_table_full``)."""
        by_inode, anonymous, at_max = self._log_split()
        lines = list(by_inode.get(st.inode, [])) if st.inode else []
        inferred = False
        if anonymous and (st.name == "init" or st in at_max):
            lines += anonymous
            inferred = st.name != "init" or bool(at_max and st not in at_max)
        unmapped = self._unmapped()
        if unmapped and not self.live and st.name != "init" and [s for s in at_max if s.name != "init"] == [st]:
            lines += [e for evs in unmapped.values() for e in evs]
            inferred = True
        return sorted(lines, key=lambda e: (e.at if e.at is not None else float("inf"), e.lineno)), inferred

    def unmapped_table_full(self) -> dict[int, list[KernelLogEvent]]:
        """Lines naming a netns inode that no namespace here has and that were not inferred to one."""
        unmapped = self._unmapped()
        if not unmapped:
            return {}
        _, _, at_max = self._log_split()
        if not self.live and len([s for s in at_max if s.name != "init"]) == 1:
            return {}
        return unmapped

    def _log_split(self) -> tuple[dict[int, list[KernelLogEvent]], list[KernelLogEvent], list[NetnsState]]:
        if self._split is None:
            by_inode: dict[int, list[KernelLogEvent]] = {}
            anonymous: list[KernelLogEvent] = []
            for e in self.snap.kernel_log:
                if e.kind == TABLE_FULL:
                    (by_inode.setdefault(e.netns_inode, []) if e.netns_inode else anonymous).append(e)
            at_max = [st for st in self.namespaces if st.count is not None and st.max
                      and st.count >= thresholds.FILL_CRITICAL * st.max]
            self._split = (by_inode, anonymous, at_max)
        return self._split

    def _unmapped(self) -> dict[int, list[KernelLogEvent]]:
        by_inode, _, _ = self._log_split()
        known = {st.inode for st in self.namespaces if st.inode}
        return {ino: evs for ino, evs in by_inode.items() if ino not in known}

    def dropping(self, st: NetnsState) -> bool:
        """Dropping now: the ``drop`` counter rose between two samples, or the kernel logged ``table
        full`` for this netns within the hour before the capture, in the current boot."""
        if (st.rates() or {}).get("drop", 0) > 0:
            return True
        lines, _ = self.table_full_lines(st)
        return any(e.boot != -1 and (a := self.age(e)) is not None and a <= 3600 for e in lines)

    def under_pressure(self, st: NetnsState) -> bool:
        return thresholds.under_pressure(st.fill, self.dropping(st))

    def entry_size(self) -> tuple[int, bool]:
        if self.snap.entry_size:
            return self.snap.entry_size, False
        return kernel.estimated_entry_size(self.version), True


def fmt_pct(x: float | None) -> str:
    return "?" if x is None else f"{x * 100:.1f}%"


def sysctl_fix(key_short: str, value: object) -> str:
    return f"sysctl -w net.netfilter.{key_short}={value}"


def apply_hint(*args: str) -> str:
    return "ctdoctor apply " + " ".join(args) + "   # persist it: sysctl.d, modprobe.d, udev re-apply rule"
