"""What differs between kernel generations, in one place.

Sizing defaults follow ``nf_conntrack_init_start`` (net/netfilter/nf_conntrack_core.c):

- buckets = RAM / 16384 / sizeof(hlist_head); on 64-bit kernels > 4 GiB RAM
  gives 262144 buckets from 5.15 on (65536 before), > 1 GiB gives 65536
  (16384 before); at least 1024 (32 before 5.15).
- max = buckets × max_factor, where max_factor is 1 from 5.15 on and 4
  before — unless ``hashsize=`` was given, then it is 8.
"""

from __future__ import annotations

import re

from ctdoctor.errors import UsageError

GiB = 1 << 30
NF = "net.netfilter."  # the prefix of every conntrack sysctl

_LEGACY = {
    "net.nf_conntrack_max": NF + "nf_conntrack_max",
    "net.ipv4.netfilter.ip_conntrack_max": NF + "nf_conntrack_max",
    "net.ipv4.netfilter.ip_conntrack_count": NF + "nf_conntrack_count",
    "net.ipv4.netfilter.ip_conntrack_buckets": NF + "nf_conntrack_buckets",
    "net.ipv4.netfilter.ip_conntrack_checksum": NF + "nf_conntrack_checksum",
    "net.ipv4.netfilter.ip_conntrack_log_invalid": NF + "nf_conntrack_log_invalid",
}


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


# Kinds of conntrack kernel log lines (``sources.kernlog`` finds them, checks count them).
TABLE_FULL, EXPECT_FULL, VMALLOC, VERSION, SUPPRESSED, BOOT = (
    "table_full", "expect_full", "vmalloc_fallback", "version", "suppressed", "boot")


# Every state word an entry can carry: the TCP, SCTP and DCCP states the kernel prints, and the flags
# a listing shows ([UNREPLIED], [ASSURED], [OFFLOAD], [HW_OFFLOAD]) plus REPLIED for the rest.
STATES = frozenset({
    "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE",
    "SYN_SENT2", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "SHUTDOWN_SENT", "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT",
    "HEARTBEAT_SENT", "HEARTBEAT_ACKED", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING",
    "TIMEWAIT", "IGNORE", "INVALID", "UNREPLIED", "ASSURED", "REPLIED", "OFFLOAD", "HW_OFFLOAD"})


def check_states(words: list[str], extra: tuple[str, ...] = ()) -> None:
    """Refuse a state no entry can have (``ESTABLISHD``), with the nearest real one: a typo must never
    quietly match nothing."""
    import difflib  # only for the error message

    known = STATES | set(extra)
    for w in words:
        if w not in known:
            near = difflib.get_close_matches(w, sorted(known), n=1, cutoff=0.6)
            raise UsageError(f"--state {w}: no such state" + (f" (did you mean {near[0]}?)" if near else
                                                               f" (one of: {', '.join(sorted(known))})"))


def parse_int(v: str | None) -> int | None:
    """A sysctl or proc value as an int, or None when it is missing or not a whole number."""
    if v is None:
        return None
    try:
        return int(v.strip())
    except ValueError:
        return None

Version = tuple[int, int, int]

# Defaults read from this generation's nf_conntrack_*_timeout tables (6.x, seconds).
DEFAULT_SETTINGS_6X = {
    "nf_conntrack_tcp_timeout_syn_sent": 120,
    "nf_conntrack_tcp_timeout_syn_recv": 60,
    "nf_conntrack_tcp_timeout_established": 432000,
    "nf_conntrack_tcp_timeout_fin_wait": 120,
    "nf_conntrack_tcp_timeout_close_wait": 60,
    "nf_conntrack_tcp_timeout_last_ack": 30,
    "nf_conntrack_tcp_timeout_time_wait": 120,
    "nf_conntrack_tcp_timeout_close": 10,
    "nf_conntrack_tcp_timeout_max_retrans": 300,
    "nf_conntrack_tcp_timeout_unacknowledged": 300,
    "nf_conntrack_tcp_loose": 1,
    "nf_conntrack_tcp_be_liberal": 0,
    "nf_conntrack_tcp_max_retrans": 3,
    "nf_conntrack_udp_timeout": 30,
    "nf_conntrack_udp_timeout_stream": 120,
    "nf_conntrack_icmp_timeout": 30,
    "nf_conntrack_icmpv6_timeout": 30,
    "nf_conntrack_generic_timeout": 600,
    "nf_conntrack_checksum": 1,
    "nf_conntrack_acct": 0,
    "nf_conntrack_timestamp": 0,
    "nf_conntrack_log_invalid": 0,
    "nf_conntrack_expect_max": None,  # buckets / 256, computed
}
# Defaults that did not change from 4.x to 6.x; others are only judged on 6.x.
STABLE_SINCE_4 = {
    "nf_conntrack_tcp_timeout_established", "nf_conntrack_tcp_timeout_time_wait",
    "nf_conntrack_tcp_timeout_close_wait", "nf_conntrack_tcp_timeout_fin_wait",
    "nf_conntrack_tcp_timeout_syn_sent", "nf_conntrack_tcp_timeout_syn_recv",
    "nf_conntrack_tcp_timeout_last_ack", "nf_conntrack_tcp_timeout_close",
    "nf_conntrack_tcp_loose", "nf_conntrack_tcp_be_liberal", "nf_conntrack_udp_timeout",
    "nf_conntrack_icmp_timeout", "nf_conntrack_generic_timeout", "nf_conntrack_checksum",
    "nf_conntrack_acct", "nf_conntrack_timestamp", "nf_conntrack_log_invalid",
}


def default_sizing(ram_bytes: int, version: Version | None, hashsize: int | None = None,
                   bits: int = 64) -> tuple[int, int]:
    """(buckets, max) the kernel picks by itself for this RAM and version."""
    modern = version is None or version >= (5, 15, 0)
    if hashsize:
        return hashsize, 8 * hashsize
    ptr = bits // 8
    buckets = ram_bytes // 16384 // ptr
    if modern:
        if bits >= 64 and ram_bytes > 4 * GiB:
            buckets = 262144
        elif ram_bytes > GiB:
            buckets = 65536
        buckets = max(buckets, 1024)
        return buckets, buckets
    if ram_bytes > 4 * GiB:
        buckets = 65536
    elif ram_bytes > GiB:
        buckets = 16384
    buckets = max(buckets, 32)
    return buckets, 4 * buckets


def default_setting(name: str, version: Version | None, buckets: int | None) -> int | None:
    """The kernel's default for a net.netfilter setting, when we know it for this version."""
    short = name.rsplit(".", 1)[-1]
    if short not in DEFAULT_SETTINGS_6X:
        return None
    if version is not None and version < (6, 0, 0) and short not in STABLE_SINCE_4:
        return None
    if short == "nf_conntrack_expect_max":
        if buckets is None:
            return None
        return max(buckets // 256, 1) * 4  # nf_ct_expect_max = 4 × expect hash size
    return DEFAULT_SETTINGS_6X[short]


def has_per_l3_modules(version: Version | None) -> bool:
    """nf_conntrack_ipv4/ipv6 existed as separate modules before 4.19."""
    return version is not None and version < (4, 19, 0)


def has_unconfirmed_list(version: Version | None) -> bool:
    """The per-CPU unconfirmed and dying lists were removed in 5.19."""
    return version is not None and version < (5, 19, 0)


def logs_netns_inode(version: Version | None) -> bool:
    """From 6.18 the table-full message names the non-initial netns by inode."""
    return version is not None and version >= (6, 18, 0)


def estimated_entry_size(version: Version | None) -> int:
    """sizeof(struct nf_conn) rounded to its slab, when /proc/slabinfo is unreadable."""
    return 320 if version is None or version >= (5, 0, 0) else 312
