"""`ctdoctor plan`: candidate sizes from each rule, side by side, then the pick and what it costs.

Rules:
- kernel default for this version and RAM (kernel.default_sizing);
- kube-proxy's: max(32768 × CPUs, 131072), buckets = max / 4;
- the observed peak: the largest count among every netns (the max is global: the fullest one
  decides); a count at 95 % of the max or more is a lower bound (demand >= max, unknown above);
  the kernel's ``nf_conntrack version ... (B buckets, M max)`` boot line is ignored (a default);
- Little's law, per netns: new flows per second × how long their entries live after close, plus
  the garbage collector's lag (half its period), plus the long-lived entries. The arrival rate
  comes from the ``insert`` counter over the sampling interval when the kernel counts it, else from
  the TIME_WAIT entries (rate = TIME_WAIT / timeout);
- the persisted value (sysctl.d): what someone chose; a live value a reset put back never lowers it.
The pick is the largest of the load-based candidates (peak, Little) × headroom, never below the
kernel default or kube-proxy's floor nor the persisted value, rounded up to a multiple of 65536, and
capped by the memory budget. The doctor's fixes (CT001, CT018) use this pick, so the doctor, ``plan``
and ``apply --from-plan`` say the same number.
"""

from __future__ import annotations

import math
from typing import Any

from ctdoctor.diagnose.checks.base import Context, NetnsState, Snapshot
from ctdoctor.diagnose.checks.ct011_timeouts import RULES
from ctdoctor.errors import UsageError
from ctdoctor.model import kernel

ROUND = 65536


def parse_size(text: str, ram: int | None) -> int:
    """512M, 2G, 10% -> bytes; a positive finite size no larger than 1 PiB, else a usage error."""
    t = text.strip().upper()
    bad = UsageError(f"--memory-budget {text}: use a size like 512M, 2G or 10% (positive, at most 1P)")
    if t.endswith("%"):
        if not ram:
            raise UsageError("--memory-budget in % needs MemTotal, which this host/image does not show")
        try:
            pct = float(t[:-1])
        except ValueError:
            raise bad from None
        if not math.isfinite(pct) or not 0 < pct <= 100:
            raise UsageError(f"--memory-budget {text}: a percentage of RAM is above 0 and at most 100")
        return int(ram * pct / 100)
    mult = 1
    for suffix, m in (("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("TIB", 1 << 40), ("K", 1 << 10),
                      ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40), ("P", 1 << 50), ("B", 1)):
        if t.endswith(suffix):
            t, mult = t[: -len(suffix)], m
            break
    try:
        v = float(t) * mult
    except ValueError:
        raise bad from None
    if not math.isfinite(v) or not 0 < v <= 1 << 50:
        raise bad
    return int(v)


def _round_up(n: int) -> int:
    return max(ROUND, ((n + ROUND - 1) // ROUND) * ROUND)


def _candidates(ctx: Context) -> list[dict[str, Any]]:
    """Each sizing rule's max (and buckets where the rule has them), with its reason."""
    snap = ctx.snap
    ram, cpus, ver = snap.mem_total, snap.cpus, snap.version
    cands: list[dict[str, Any]] = []
    if ram:
        b, m = kernel.default_sizing(ram, ver)
        cands.append({"rule": "kernel default", "max": m, "buckets": b,
                      "reason": f"what this kernel ({snap.release or '?'}) picks by itself for {ram >> 20} MiB RAM"})
    if cpus:
        m = max(32768 * cpus, 131072)
        cands.append({"rule": "kube-proxy", "max": m, "buckets": m // 4,
                      "reason": f"max(32768 × {cpus} CPUs, 131072), buckets = max / 4"})
    # every netns counts its own entries against the one global max: the fullest one decides
    gmax = ctx.global_max()
    counts = [(st.count, st.name) for st in snap.namespaces if st.count is not None]
    if counts:
        peak, peak_ns = max(counts)
        at_limit = gmax is not None and gmax > 0 and peak >= AT_LIMIT * gmax
        cands.append({"rule": "observed peak", "max": max(peak, gmax or 0) if at_limit else peak, "buckets": None,
                      "lower_bound": at_limit,
                      "reason": f"largest count now: {peak} in netns {peak_ns}"
                                + (f", at the max {gmax}: demand is at least that, unknown above" if at_limit else "")})
    best: tuple[int, str] | None = None
    for st in snap.namespaces:  # Little's law per netns: the busiest one decides
        rate, rate_how = _flow_rate(ctx, st)
        if rate is None:
            continue
        t = ctx.setting("nf_conntrack_tcp_timeout_time_wait", st) or 120
        est = int(rate * (t + GC_PERIOD / 2)) + (_long_lived(ctx, st) or 0)
        if best is None or est > best[0]:
            best = (est, (f"netns {st.name}: {rate:.1f} new flows/s ({rate_how}) × ({t} s after close + "
                         f"{GC_PERIOD // 2} s, half the garbage collector's period) + the long-lived entries"))
    if best is not None:
        cands.append({"rule": "Little's law", "max": best[0], "buckets": None, "reason": best[1]})
    persisted = _persisted_max(snap)
    if persisted is not None:
        cands.append({"rule": "persisted", "max": persisted, "buckets": None,
                      "reason": "the value set in sysctl.d / sysctl.conf: what someone chose, kept unless the "
                                "load needs more"})
    return cands


# A count at 95 % of the max or more is capped by it: the demand behind it is unknown above.
AT_LIMIT = 0.95
# Entries outlive their timeout until the garbage collector passes: on 5.x/6.x its scan interval grows
# to 60 s while few entries expire, so a closed flow lives on average T + P/2 (measured on this kernel:
# P ~9.7 s at T = 10 s, ~18.5 s at 30 s, ~61 s beside long-lived entries; plain λ·T was 22-75 % low).
GC_PERIOD = 60


def _persisted_max(snap: Snapshot) -> int | None:
    p = snap.persisted.sysctl.get("net.netfilter.nf_conntrack_max") if snap.persisted else None
    return int(p.value) if p is not None and p.value.isdigit() else None


def _long_lived(ctx: Context, st: NetnsState) -> int | None:
    """Entries that are not on their way out (everything but TIME_WAIT and CLOSE) in this netns."""
    s = ctx.summary(st) if ctx.listing_matters(st) else None
    if s is None:
        return st.count
    return s.listed - s.states.get("TIME_WAIT", 0) - s.states.get("CLOSE", 0)


def _flow_rate(ctx: Context, st: NetnsState | None) -> tuple[float | None, str | None]:
    """New flows per second in this netns: the insert counter's rate, else TIME_WAIT entries / their timeout."""
    if st is None:
        return None, None
    r = st.rates() or {}
    if r.get("insert"):
        return r["insert"], f"insert counter over {st.interval:g} s"
    s = ctx.summary(st) if ctx.listing_matters(st) else None
    tw_timeout = ctx.setting("nf_conntrack_tcp_timeout_time_wait", st) or 120
    if s is not None and s.states.get("TIME_WAIT"):
        return (s.states["TIME_WAIT"] / tw_timeout,
                f"{s.states['TIME_WAIT']} TIME_WAIT entries / {tw_timeout} s time_wait timeout")
    return None, None


def _timeouts(ctx: Context) -> list[dict[str, Any]]:
    """Timeouts worth lowering: a state holding >= 20 % of a netns at least 30 % full, kept longer than needed."""
    timeouts: list[dict[str, Any]] = []
    for st in ctx.snap.namespaces:
        if st.fill is None or st.fill < 0.3:
            continue
        s = ctx.summary(st)
        if not s or not s.listed:
            continue
        for label, (key, limit, suggest) in RULES.items():
            share = s.states.get(label, 0) / s.listed
            cur = ctx.setting(key, st)
            if share >= 0.2 and cur and cur > limit and not any(t["name"] == key for t in timeouts):
                timeouts.append({"name": key, "current": cur, "suggested": suggest,
                                 "reason": f"{label} is {share * 100:.0f}% of netns {st.name}'s entries"})
    return timeouts


def make_plan(ctx: Context, headroom: float = 2.0, budget: int | None = None) -> dict[str, Any]:
    snap = ctx.snap
    ram, cpus, ver = snap.mem_total, snap.cpus, snap.version
    size, estimated = ctx.entry_size()
    cands = _candidates(ctx)
    load = [c["max"] for c in cands if c["rule"] in ("observed peak", "Little's law")]
    floor = [c["max"] for c in cands if c["rule"] in ("kernel default", "kube-proxy")]
    pick = _round_up(int(max(load or [0]) * headroom))
    pick = max([pick, *floor]) if floor else pick
    # what someone persisted wins over a live value a reset put back (never plan to lower it)
    persisted = [c["max"] for c in cands if c["rule"] == "persisted"]
    pick = max([pick, *persisted])
    capped = False
    if budget:
        most = budget // (size + 8)
        if pick > most:
            pick, capped = max(ROUND, (most // ROUND) * ROUND), True
    buckets = pick if ver is None or ver >= (5, 15, 0) else pick // 4
    mem = pick * size + buckets * 8
    timeouts = _timeouts(ctx)
    return {
        "schema": 1,
        "host": {"kernel": snap.release, "mem_total": ram, "cpus": cpus},
        "current": {"max": ctx.global_max(), "buckets": ctx.setting("nf_conntrack_buckets")},
        "candidates": cands,
        "headroom": headroom,
        "pick": {"max": pick, "buckets": buckets, "capped_by_budget": capped, "budget": budget},
        "timeouts": timeouts,
        "memory": {"entry_size": size, "entry_size_estimated": estimated,
                   "entry_size_source": snap.entry_size_source or "estimate (no /proc/slabinfo)",
                   "entries_bytes": pick * size, "buckets_bytes": buckets * 8, "total_bytes": mem,
                   "share_of_ram": round(mem / ram, 4) if ram else None},
        "apply": f"ctdoctor apply --max {pick} --buckets {buckets}"
                 + "".join(f" --timeout {t['name'].removeprefix('nf_conntrack_')}={t['suggested']}" for t in timeouts),
    }


def pick_max(ctx: Context) -> int:
    """The max ``plan`` picks (default headroom, no budget): what the doctor's fixes name, so the
    doctor, ``plan`` and ``apply --from-plan`` agree."""
    return int(make_plan(ctx)["pick"]["max"])
