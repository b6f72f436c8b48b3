"""`ctdoctor status`: one screen of facts per netns, as plain data for any renderer."""

from __future__ import annotations

from typing import Any

from ctdoctor.model.drift import settings_report
from ctdoctor.model.pods import Pod
from ctdoctor.sources.snapshot import Snapshot, entry_memory

__all__ = ["SCHEMA", "pod_dict", "settings_report", "status_report"]

SCHEMA = 1
STAT_KEYS = ("drop", "insert_failed", "early_drop", "invalid", "found", "insert", "clashres",
             "chainlength", "search_restart", "icmp_error", "expect_new", "expect_create", "expect_delete")


def pod_dict(pod: Pod | None) -> dict[str, str] | None:
    """A pod as JSON: namespace, name, uid, container (None off Kubernetes)."""
    return None if pod is None else {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid,
                                     "container": pod.container}


def status_report(snap: Snapshot) -> dict[str, Any]:
    nss = []
    for st in snap.namespaces:
        sums = st.stats.sums if st.stats else {}
        rates = st.rates()
        nss.append({
            "name": st.name,
            "inode": st.inode,
            "owner": st.owner,
            "pod": pod_dict(st.pod),
            "count": st.count,
            "max": st.max,
            "buckets": st.buckets,
            "fill": round(st.fill, 4) if st.fill is not None else None,
            "stats": {k: sums[k] for k in STAT_KEYS if k in sums},
            "rates": {k: rates[k] for k in STAT_KEYS if k in rates} if rates else None,
            "interval": st.interval,
            "memory": entry_memory(snap, st.count),
            "sources": {k: v for k, v in st.sources.items() if k in ("count", "max", "buckets", "stats")},
        })
    mods = [{"name": m.name, "state": m.state, "refcount": m.refcount, "holders": m.holders,
             "source": m.source} for m in snap.modules.values() if m.state != "unknown" or m.name == "nf_conntrack"]
    log_counts: dict[str, int] = {}
    for ev in snap.kernel_log:
        log_counts[ev.kind] = log_counts.get(ev.kind, 0) + 1
    return {
        "schema": SCHEMA,
        "host": {"hostname": snap.hostname, "kernel": snap.release, "source": snap.source,
                 "root": snap.root_label, "cpus": snap.cpus, "mem_total": snap.mem_total},
        "namespaces": nss,
        "modules": mods,
        "settings": settings_report(snap),
        "kernel_log": {"events": log_counts, "sources": snap.kernel_log_sources},
        "notes": snap.notes,
        "vanished": snap.vanished,
    }
