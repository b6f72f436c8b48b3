"""Settings drift: live values that differ from the kernel's default or from the persisted ones.

Pure: ``status`` shows it, CT006 and CT007 judge it, ``recover`` re-applies what drifted.
"""

from __future__ import annotations

from typing import Any

from ctdoctor.model import kernel
from ctdoctor.model.kernel import NF, canonical, parse_int
from ctdoctor.model.snapshot import Snapshot


def settings_report(snap: Snapshot) -> dict[str, list[dict[str, Any]]]:
    """Settings that differ from this kernel's default, and live values that differ from persisted ones."""
    buckets = parse_int(snap.settings.get(NF + "nf_conntrack_buckets"))
    non_default: list[dict[str, Any]] = []
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
    return {"non_default": non_default, "drift": drift(snap)}


def drift(snap: Snapshot) -> list[dict[str, Any]]:
    """Live values that differ from the persisted ones (sysctl.d, sysctl.conf)."""
    out: list[dict[str, Any]] = []
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
            out.append({"key": ck, "live": now, "persisted": s.value, "file": s.file, "line": s.lineno})
    return out
