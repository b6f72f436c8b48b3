"""Small builders of plain facts for the checks' table tests: a netns, a snapshot, a listing summary,
a Context; and ``run``/``fired``/``quiet`` that run one check in-process (no CLI, no image)."""

from __future__ import annotations

from typing import Any

from ctdoctor.diagnose.checks import load
from ctdoctor.diagnose.checks.base import Context, Finding, Severity, Unknown
from ctdoctor.model.kernel import NF, TABLE_FULL
from ctdoctor.model.kernlog import KernelLogEvent
from ctdoctor.model.modules import ModuleInfo, ModuleState
from ctdoctor.model.persisted import Persisted
from ctdoctor.model.rules import RulesSummary
from ctdoctor.model.snapshot import Facts, ListingSummary, NetnsState, Snapshot
from ctdoctor.model.stats import CpuStats

CAPTURED = 1_764_000_000.0  # the capture time of every snapshot built here
STAT = "/proc/net/stat/nf_conntrack"
MAX = 262144


def stats(**sums: int) -> CpuStats:
    """One CPU's counters (``drop=3``), as /proc/net/stat/nf_conntrack would give them."""
    return CpuStats(per_cpu=[dict(sums)], columns=["entries", *sums], source=STAT)


def ns(name: str = "init", count: int | None = 1000, max: int | None = MAX, *, buckets: int | None = None,
       inode: int | None = None, settings: dict[str, Any] | None = None, stats: CpuStats | None = None,
       later: CpuStats | None = None, interval: float | None = None, rules: RulesSummary | None = None,
       owner: str = "") -> NetnsState:
    """A netns: count and max (with their sources), its own net.netfilter settings (short names)."""
    st = NetnsState(name, inode, owner, count=count, max=max, buckets=buckets, stats=stats, stats_later=later,
                    interval=interval, rules=rules or RulesSummary())
    for short, v in {"nf_conntrack_count": count, "nf_conntrack_max": max, "nf_conntrack_buckets": buckets,
                     **(settings or {})}.items():
        if v is not None:
            st.settings[NF + short] = str(v)
            st.sources[NF + short] = f"/proc/sys/net/netfilter/{short}"
    if count is not None:
        st.sources["count"] = "/proc/sys/net/netfilter/nf_conntrack_count"
    if max is not None:
        st.sources["max"] = "/proc/sys/net/netfilter/nf_conntrack_max"
    if stats is not None:
        st.sources["stats"] = STAT
    return st


def snapshot(*namespaces: NetnsState, **kw: Any) -> Snapshot:
    """A bundle's snapshot of these namespaces (default: one healthy init netns) on a 6.1 kernel with 8 GiB;
    the host settings are the first netns's. ``modules``: {name: state}."""
    spaces = list(namespaces) or [ns()]
    modules = {n: ModuleInfo(n, ModuleState(s), source="/proc/modules")
               for n, s in kw.pop("modules", {"nf_conntrack": "loaded", "nf_nat": "loaded"}).items()}
    snap = Snapshot("bundle", "/images/host", hostname="host", release="6.1.0", version=(6, 1, 0), cpus=4,
                    mem_total=8 << 30, namespaces=spaces, modules=modules, modules_source="/proc/modules",
                    module_support=True, settings=dict(spaces[0].settings), kernel_log_sources=["dmesg"],
                    captured_at=CAPTURED, captured_at_source="ctdoctor/meta.json", boot_time=CAPTURED - 86400 * 3)
    for k, v in kw.items():
        setattr(snap, k, v)
    return snap


def summary(states: dict[str, int] | None = None, listed: int | None = None, **kw: Any) -> ListingSummary:
    """A listing's tally: its state mix (``listed`` defaults to the sum of the states)."""
    states = states or {"ESTABLISHED": 100}
    s = ListingSummary(listed if listed is not None else sum(states.values()), False, "/proc/net/nf_conntrack",
                       states, kw.pop("protos", {"tcp": sum(states.values())}), kw.pop("top", {}))
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def log(kind: str = TABLE_FULL, age: float = 60.0, boot: int | None = 0, netns_inode: int | None = None,
        line: str = "nf_conntrack: nf_conntrack: table full, dropping packet") -> KernelLogEvent:
    """A kernel log line ``age`` seconds before the capture."""
    return KernelLogEvent(kind, line, 1, "dmesg", netns_inode=netns_inode, when="[1.0]", at=CAPTURED - age,
                          boot=boot, text=line)


def context(snap: Snapshot | None = None, **facts: Any) -> Context:
    """The checks' Context over plain data: ``facts`` are Facts fields (summaries={"init": ...})."""
    return Context(snap or snapshot(), Facts(**facts))


def run(code: str, ctx: Context) -> list[Finding | Unknown]:
    return list(load(code).run(ctx))


def fired(code: str, ctx: Context, severity: Severity, netns: str | None = "init") -> Finding:
    """The one finding this check gives for this netns, with its code and severity (fails if it gave none)."""
    got = [f for f in run(code, ctx) if isinstance(f, Finding) and f.netns == netns]
    assert len(got) == 1, f"{code}: expected one finding for {netns}, got {run(code, ctx)}"
    f = got[0]
    assert (f.id, f.severity) == (code, severity), f
    assert f.summary and f.explanation
    return f


def quiet(code: str, ctx: Context) -> None:
    got = run(code, ctx)
    assert got == [], got


def unknown(code: str, ctx: Context, netns: str | None = "init") -> Unknown:
    """The check's one "not enough data" for this netns."""
    got = [u for u in run(code, ctx) if isinstance(u, Unknown) and u.netns == netns]
    assert len(got) == 1, f"{code}: expected one unknown for {netns}, got {run(code, ctx)}"
    assert got[0].id == code and got[0].reason.startswith("not enough data")
    return got[0]


def value(evidence: Any) -> Any:
    """An evidence item's value (items are {"value": v, "source": s} or plain)."""
    return evidence["value"] if isinstance(evidence, dict) and "value" in evidence else evidence


__all__ = ["MAX", "Persisted", "RulesSummary", "context", "fired", "log", "ns", "quiet", "run", "snapshot", "stats",
           "summary", "unknown", "value"]
