"""Kernel settings: the ``/proc/sys`` tree and ``sysctl -a`` output.

Names are kept in dotted form (``net.netfilter.nf_conntrack_max``). Legacy
names from the ``ip_conntrack`` era (``net.ipv4.netfilter.ip_conntrack_max``,
RHEL 5/6) and the ``net.nf_conntrack_max`` alias are mapped to the modern
name by :func:`canonical`.
"""

from __future__ import annotations

import re

NF = "net.netfilter."

_LEGACY = {
    "net.nf_conntrack_max": NF + "nf_conntrack_max",
    "net.ipv4.netfilter.ip_conntrack_max": NF + "nf_conntrack_max",
    "net.ipv4.netfilter.ip_conntrack_count": NF + "nf_conntrack_count",
    "net.ipv4.netfilter.ip_conntrack_buckets": NF + "nf_conntrack_buckets",
    "net.ipv4.netfilter.ip_conntrack_checksum": NF + "nf_conntrack_checksum",
    "net.ipv4.netfilter.ip_conntrack_log_invalid": NF + "nf_conntrack_log_invalid",
}


_NOISE = re.compile(r'sysctl: (?:reading key|permission denied on key|cannot stat) "?[^"\n]*"?(?:: [^\n]*)?\n?')


def canonical(key: str) -> str:
    """Dotted, modern name for a sysctl key (``/`` separators and legacy names accepted)."""
    key = key.strip()
    if "/" in key and (key.find("/") < key.find(".") or "." not in key):
        key = key.replace("/", "\x00").replace(".", "/").replace("\x00", ".")
    if key in _LEGACY:
        return _LEGACY[key]
    m = re.match(r"net\.ipv4\.netfilter\.ip_conntrack_(.+)", key)
    if m:
        return NF + "nf_conntrack_" + m.group(1)
    return key


def parse_sysctl_a(text: str) -> dict[str, str]:
    """``sysctl -a`` output -> {key: value}. Tolerates merged stderr lines."""
    out: dict[str, str] = {}
    # Merged stderr can land inside another line; cutting it out with its
    # newline rejoins the two halves.
    text = _NOISE.sub("", text)
    for ln in text.splitlines():
        if " = " not in ln:
            continue  # "sysctl: reading key ..." and other noise
        if ln.startswith("sysctl:"):
            continue
        k, _, v = ln.partition(" = ")
        k = k.strip()
        if not k or " " in k:
            continue
        out[k] = v.strip()
    return out


def parse_int(v: str | None) -> int | None:
    if v is None:
        return None
    v = v.strip()
    try:
        return int(v)
    except ValueError:
        return None
