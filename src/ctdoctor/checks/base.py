"""What checks get (a Context over the Snapshot) and what they give (Findings).

Checks are pure: ``run(ctx) -> Iterable[Finding | Unknown]``. Everything a
check needs beyond the Snapshot (the listing's state mix and top keys, socket
counts, the distribution) comes from a ``Facts`` object made outside the
checks (``ctdoctor.facts``), lazily, once, and shared: a check never reads the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypedDict

from ctdoctor import kernel
from ctdoctor.kernel import NF, parse_int
from ctdoctor.snapshot import NetnsState, Snapshot


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
    top: dict[str, list[tuple[str | None, int]]]  # src/dst/dport -> [(value, count)] largest first
    unreadable: int = 0  # lines skipped because they were not entries
    proto_states: dict[tuple[str, str], int] = field(default_factory=dict)  # (proto, state mix label) -> n


class Evidence(TypedDict, total=False):
    """One evidence item of a finding: the value, and the file or command it came from."""

    value: Any
    source: str


def ev(value, source: str | None = None) -> Evidence:
    """An evidence item: the value and the file it came from."""
    return {"value": value, "source": source} if source else {"value": value}


class Facts(Protocol):
    """What checks may ask beyond the Snapshot; ``ctdoctor.facts.HostFacts`` answers from the host image
    or the live host, tests can answer from a dict. A check never sees a root."""

    live: bool

    def summary(self, st: NetnsState) -> ListingSummary | None: ...
    def summary_missing_reason(self, st: NetnsState) -> str: ...
    def established_sockets(self, st: NetnsState) -> int | None: ...
    def sockets_source(self, st: NetnsState) -> str: ...
    def distro(self) -> str: ...
    def expectations(self) -> tuple[int | None, str | None]: ...


class Context:
    def __init__(self, snap: Snapshot, facts: Facts):
        self.snap = snap
        self.facts = facts
        self.live = facts.live

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

    # ---- facts gathered outside the checks (the listing, sockets, host files) ------------

    def summary(self, st: NetnsState) -> ListingSummary | None:
        return self.facts.summary(st)

    def summary_missing_reason(self, st: NetnsState) -> str:
        return self.facts.summary_missing_reason(st)

    def established_sockets(self, st: NetnsState) -> int | None:
        return self.facts.established_sockets(st)

    def sockets_source(self, st: NetnsState) -> str:
        return self.facts.sockets_source(st)

    def distro(self) -> str:
        return self.facts.distro()

    def expectations(self) -> tuple[int | None, str | None]:
        """(entries in the expectation table, where that came from), or (None, None)."""
        return self.facts.expectations()

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
