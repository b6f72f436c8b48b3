"""`ctdoctor status`: one screen of facts per netns, as plain data for any renderer."""

from __future__ import annotations

from ctdoctor.model import kernel
from ctdoctor.sources.snapshot import Snapshot, entry_memory
from ctdoctor.sources.sysctl import NF, canonical, parse_int

SCHEMA = 1
STAT_KEYS = ("drop", "insert_failed", "early_drop", "invalid", "found", "insert", "clashres",
             "chainlength", "search_restart", "icmp_error", "expect_new", "expect_create", "expect_delete")


def settings_report(snap: Snapshot) -> dict:
    """Settings that differ from this kernel's default, and live values that differ from persisted ones."""
    buckets = parse_int(snap.settings.get(NF + "nf_conntrack_buckets"))
    non_default = []
    for key in sorted(snap.settings):
        short = key.rsplit(".", 1)[-1]
        if short in ("nf_conntrack_count", "nf_conntrack_max", "nf_conntrack_buckets"):
            continue
        default = kernel.default_setting(key, snap.version, buckets)
        live = parse_int(snap.settings[key])
        if default is not None and live is not None and live != default:
            non_default.append({"key": key, "value": live, "default": default,
                                "source": snap.namespaces[0].sources.get(key, "") if snap.namespaces else ""})
    hashsize = None  # only modprobe.d says hashsize= was given; the module parameter mirrors the live size
    for d in snap.persisted.modprobe:
        if d.verb == "options" and d.module == "nf_conntrack":
            for opt in d.args.split():
                k, _, v = opt.partition("=")
                if k == "hashsize" and v.isdigit():
                    hashsize = int(v)
    if snap.mem_total:
        dbuckets, dmax = kernel.default_sizing(snap.mem_total, snap.version, hashsize)
        for short, dv in (("nf_conntrack_max", dmax), ("nf_conntrack_buckets", dbuckets)):
            live = parse_int(snap.settings.get(NF + short))
            if live is not None and live != dv:
                non_default.append({"key": NF + short, "value": live, "default": dv,
                                    "source": "default computed from MemTotal and kernel version"})
    drift = []
    for key, s in sorted(snap.persisted.sysctl.items()):
        ck = canonical(key)
        if not (ck.startswith(NF) or ck == "net.nf_conntrack_max"):
            continue
        now = snap.settings.get(ck)
        if now is None and ck == "net.nf_conntrack_max":
            now = snap.settings.get(NF + "nf_conntrack_max")
        if now is None:
            continue
        if " ".join(now.split()) != " ".join(s.value.split()):
            drift.append({"key": ck, "live": now, "persisted": s.value, "file": s.file, "line": s.lineno})
    return {"non_default": non_default, "drift": drift}


def pod_dict(pod) -> dict | None:
    """A pod as JSON: namespace, name, uid, container (None off Kubernetes)."""
    return None if pod is None else {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid,
                                     "container": pod.container}


def status_report(snap: Snapshot) -> dict:
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
