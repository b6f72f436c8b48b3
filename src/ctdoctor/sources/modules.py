"""Kernel modules: ``/proc/modules``, ``lsmod`` and ``/sys/module/<name>``.

A module can be *builtin* (``/sys/module/X`` exists, no ``refcnt`` file, not
in /proc/modules), *loaded* (listed in /proc/modules / lsmod), or *absent*.
``/proc/modules`` lines are ``name size refcount holders, state address``
(``print_unload_info`` prints ``-`` when there are no holders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ModuleState(StrEnum):
    BUILTIN = "builtin"
    LOADED = "loaded"
    ABSENT = "absent"
    UNKNOWN = "unknown"
    PRESENT = "present"  # loaded or built in; no module list says which


BUILTIN, LOADED, ABSENT, UNKNOWN, PRESENT = (ModuleState.BUILTIN, ModuleState.LOADED, ModuleState.ABSENT,
                                             ModuleState.UNKNOWN, ModuleState.PRESENT)

CONNTRACK_MODULES = (
    "nf_conntrack", "nf_conntrack_ipv4", "nf_conntrack_ipv6", "nf_defrag_ipv4", "nf_defrag_ipv6",
    "nf_nat", "nf_nat_ipv4", "nf_nat_ipv6", "iptable_nat", "ip6table_nat", "nft_nat", "nft_ct",
    "xt_conntrack", "xt_state", "nf_conntrack_netlink", "nft_chain_nat", "ip_conntrack", "ip_nat",
    "iptable_raw", "nf_conntrack_ftp", "nf_conntrack_sip", "nf_conntrack_tftp",
)


@dataclass
class ModuleInfo:
    name: str
    state: str = UNKNOWN
    refcount: int | None = None
    holders: list[str] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    source: str = ""


def parse_proc_modules(text: str) -> dict[str, ModuleInfo]:
    out = {}
    for ln in text.splitlines():
        p = ln.split()
        if len(p) < 3 or not p[1].isdigit():
            continue
        holders = [] if len(p) < 4 or p[3] == "-" else [h for h in p[3].split(",") if h]
        out[p[0]] = ModuleInfo(p[0], LOADED, int(p[2]) if p[2].lstrip("-").isdigit() else None, holders,
                               source="/proc/modules")
    return out


def parse_lsmod(text: str, source: str = "lsmod") -> dict[str, ModuleInfo]:
    """``Module Size Used by`` table: ``name size count [holder,holder]``."""
    out = {}
    for ln in text.splitlines():
        p = ln.split()
        if len(p) < 3 or p[0] == "Module" or not p[1].isdigit() or not p[2].lstrip("-").isdigit():
            continue
        holders = [h for h in p[3].split(",") if h] if len(p) > 3 else []
        out[p[0]] = ModuleInfo(p[0], LOADED, int(p[2]), holders, source=source)
    return out


def loaded(module: str) -> bool:
    """The module is in the running kernel now (/sys/module/M/initstate says live)."""
    try:
        with open(f"/sys/module/{module}/initstate") as f:
            return f.read().strip() == "live"
    except OSError:
        return False
