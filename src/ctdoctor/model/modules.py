"""Kernel modules as data: a module's state and what holds it (read by ``sources.modules``)."""

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
    state: ModuleState = UNKNOWN
    refcount: int | None = None
    holders: list[str] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    source: str = ""
