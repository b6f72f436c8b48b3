"""The exporter's metrics (docs/design.md, "The exporter"): plain data in, Prometheus exposition out.

Nothing here reads the machine: ``Sample`` (``model.samples``: what a scrape reads, per
netns) and ``Refreshed`` (what the background refresh found) are built by ``sources.live``
and ``monitor.refresh_worker``, so the same rendering serves ``/metrics``, the textfile and the
tests.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, generate_latest

from ctdoctor import __version__
from ctdoctor.model.samples import Sample

PREFIX = "ctdoctor_"

# /proc/net/stat/nf_conntrack column -> metric name part. The file's names changed over time
# (``searched`` -> ``clashres`` in 5.10, ``delete_list`` -> ``chainlength`` in 5.15); the
# metric takes the name conntrack -S and ctnetlink use for the same counter.
STAT_NAMES = {"clashres": "clash_resolve", "chainlength": "chaintoolong"}
STAT_HELP = {
    "found": "lookups that found an entry",
    "invalid": "packets conntrack could not track (malformed, out of window, ...)",
    "insert": "entries inserted",
    "insert_failed": "entries that could not be inserted (clash lost, or the table full)",
    "drop": "packets dropped because the table was full and early drop freed nothing",
    "early_drop": "unassured entries evicted to make room in a full table",
    "search_restart": "hash lookups restarted because a resize or a move raced them",
    "clash_resolve": "insert clashes resolved by reusing the other entry",
    "chaintoolong": "inserts refused because a hash chain was too long",
    "icmp_error": "ICMP errors that matched no entry",
}


@dataclass
class Refreshed:
    """What the last background refresh found (the listing and the doctor)."""

    at: float = 0.0  # unix time it finished; 0 = never
    duration: float = 0.0
    ok: bool = False
    error: str = ""
    by_state: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)  # netns -> (proto, state, n)
    listing_error: dict[str, str] = field(default_factory=dict)  # netns -> why its listing is missing
    findings: list[tuple[str, str, str]] = field(default_factory=list)  # (code, severity, netns)
    cpu_seconds: float = 0.0  # CPU this refresh used (user + system, as the worker counted it)
    rss_mb: float = 0.0  # the worker's resident memory after it
    peak_rss_mb: float = 0.0  # ... and the most it ever held


@dataclass
class Exposition:
    samples: list[Sample]
    limit: int | None
    buckets: int | None
    refreshed: Refreshed
    table_full: dict[str, int]  # netns -> kernel log lines
    kernel_log_readable: bool | None
    refreshes: int = 0
    refresh_failures: int = 0
    refresh_cpu_seconds: float = 0.0
    detail: str = "busy"  # "all": every series of every netns; "busy": a quiet netns gets the few that matter
    server: ServerStats | None = None  # the HTTP server's own numbers (None in a textfile)
    compat: str = ""  # "node": node_exporter's node_nf_conntrack_* names too, with a netns label
    domainname: str = "(none)"  # node_uname_info's domainname (read by sources.live for --compat node)


@dataclass
class ServerStats:
    """The HTTP server's health: what a scrape of the exporter says about the exporter."""

    last_scrape_seconds: float | None = None  # how long the previous /metrics took to build
    scrape_errors: int = 0  # /metrics answers that failed (500)
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> requests/connections turned away
    connections: int = 0  # open now


# What a quiet netns publishes by default (besides its info): a fleet pays ~7 series per pod, not ~25.
QUIET_STATS = ("drop", "early_drop", "insert_failed")


def detailed(s: Sample, limit: int | None, detail: str) -> bool:
    """Every series for this netns: the host's, one at half its limit or more, or one that has dropped."""
    if detail == "all" or s.netns == "init":
        return True
    if s.count is not None and limit and s.count >= limit / 2:
        return True
    st = s.stats or {}
    return bool(st.get("drop") or st.get("insert_failed") or st.get("early_drop"))


def _gauge(name: str, doc: str, labels: tuple[str, ...] | list[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))


def families(x: Exposition) -> list[Metric]:
    """prometheus_client metric families for one exposition."""
    full = {s.netns for s in x.samples if detailed(s, x.limit, x.detail)}
    out = _table_families(x)
    out += _stat_families(x, full)
    out += _netns_families(x)
    out += _found_families(x, full)
    out += _log_families(x)
    out += _refresh_families(x)
    if x.server is not None:
        out += _server_families(x.server)
    if x.compat == "node":
        out += node_families(x, full)
    return out


def _count_and_limit(x: Exposition, entries: GaugeMetricFamily, limit: GaugeMetricFamily) -> None:
    """Each readable netns's count and the one global limit (ours and node_exporter's names alike)."""
    for s in x.samples:
        if not s.readable:
            continue
        if s.count is not None:
            entries.add_metric([s.netns], s.count)
        if x.limit is not None:
            limit.add_metric([s.netns], x.limit)


def _table_families(x: Exposition) -> list[Metric]:
    entries = _gauge("conntrack_entries", "Conntrack entries of the netns (its nf_conntrack_count)", ["netns"])
    limit = _gauge("conntrack_entries_limit",
                   "nf_conntrack_max: one global limit that every netns's count is compared against", ["netns"])
    _count_and_limit(x, entries, limit)
    out: list[Metric] = [entries, limit]
    if x.buckets is not None:
        b = _gauge("conntrack_buckets", "Conntrack hash table buckets (global, nf_conntrack_buckets)")
        b.add_metric([], x.buckets)
        out.append(b)
    return out


def _stat_families(x: Exposition, full: set[str]) -> list[Metric]:
    stat_fams: dict[str, CounterMetricFamily] = {}
    for s in x.samples:
        if not s.readable:
            continue
        for col, v in sorted((s.stats or {}).items()):
            if s.netns not in full and col not in QUIET_STATS:
                continue
            name = STAT_NAMES.get(col, col)
            fam = stat_fams.get(name)
            if fam is None:
                fam = stat_fams[name] = CounterMetricFamily(
                    f"{PREFIX}conntrack_stat_{name}", "Per-CPU conntrack statistic, summed over CPUs: "
                    + STAT_HELP.get(name, f"the {col!r} column of /proc/net/stat/nf_conntrack"), labels=["netns"])
            fam.add_metric([s.netns], v)
    return [stat_fams[k] for k in sorted(stat_fams)]


def _netns_families(x: Exposition) -> list[Metric]:
    info = _gauge("netns_info", "1 per network namespace, with its inode and what holds it (the Kubernetes "
                  "namespace, pod and container when a pod does; join on netns)",
                  ["netns", "inode", "owner", "namespace", "pod", "container"])
    ok = _gauge("exporter_netns_readable", "1 when the exporter could read the netns (0: needs root)", ["netns"])
    for s in x.samples:
        info.add_metric([s.netns, str(s.inode), s.owner, s.namespace, s.pod, s.container], 1)
        ok.add_metric([s.netns], 1 if s.readable and s.count is not None else 0)
    return [info, ok]


def _found_families(x: Exposition, full: set[str]) -> list[Metric]:
    """What the background refresh found: entries by state, the doctor's findings."""
    r = x.refreshed
    known = {s.netns for s in x.samples}
    by_state = _gauge("conntrack_entries_by_state",
                      "Entries by protocol and state, from the background refresh of the listing "
                      "(state: the TCP/SCTP/DCCP state, else ASSURED, UNREPLIED or REPLIED)",
                      ["netns", "proto", "state"])
    for ns in sorted(r.by_state):
        if ns in known and ns in full:  # gone since the refresh: its series go away now; quiet: none
            for proto, state, n in r.by_state[ns]:
                by_state.add_metric([ns, proto, state], n)
    finding = _gauge("finding", "1 for each active doctor finding (ctdoctor explain CODE)",
                     ["code", "severity", "netns"])
    for code, sev, ns in sorted(set(r.findings)):
        if ns in known or ns == "init":
            finding.add_metric([code, sev, ns], 1)
    return [by_state, finding]


def _log_families(x: Exposition) -> list[Metric]:
    tf = CounterMetricFamily(PREFIX + "kernel_log_table_full", "'table full, dropping packet' kernel log lines "
                             "seen, by the netns they name (kernels before 6.18 name none: 'unattributed')",
                             labels=["netns"])
    for ns, n in sorted(x.table_full.items()):
        tf.add_metric([ns], n)
    out: list[Metric] = [tf]
    if x.kernel_log_readable is not None:
        kl = _gauge("exporter_kernel_log_readable", "1 when the exporter can follow the kernel log (/dev/kmsg)")
        kl.add_metric([], 1 if x.kernel_log_readable else 0)
        out.append(kl)
    return out


def _refresh_families(x: Exposition) -> list[Metric]:
    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + name, doc)

    r = x.refreshed
    dur = gauge("exporter_refresh_duration_seconds", "How long the last background refresh took")
    last = gauge("exporter_last_refresh_timestamp_seconds", "When the last successful background refresh ended")
    success = gauge("exporter_refresh_success", "1 when the last background refresh succeeded")
    if r.at:
        dur.add_metric([], round(r.duration, 6))
        last.add_metric([], round(r.at, 3))
    success.add_metric([], 1 if r.ok else 0)
    runs = CounterMetricFamily(PREFIX + "exporter_refreshes", "Background refreshes run")
    runs.add_metric([], x.refreshes)
    fails = CounterMetricFamily(PREFIX + "exporter_refresh_failures", "Background refreshes that failed")
    fails.add_metric([], x.refresh_failures)
    cpu = CounterMetricFamily(PREFIX + "exporter_refresh_cpu_seconds",
                              "CPU (user and system) the background refreshes used, summed")
    cpu.add_metric([], round(x.refresh_cpu_seconds, 4))
    return [dur, last, success, runs, fails, cpu]


# node_exporter's conntrack collector (1.x): its names, help and types (all gauges), so node-mixin,
# awesome-prometheus-alerts and the node-exporter-full dashboard see every netns unchanged.
NODE_ENTRIES = ("Number of currently allocated flow entries for connection tracking.",
                "Maximum size of connection tracking table.")
NODE_STATS = {
    "drop": "Number of packets dropped due to conntrack failure.",
    "early_drop": "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    "found": "Number of searched entries which were successful.",
    "ignore": "Number of packets seen which are already connected to a conntrack entry.",
    "insert": "Number of entries inserted into the list.",
    "insert_failed": "Number of entries for which list insertion was attempted but failed.",
    "invalid": "Number of packets seen which can not be tracked.",
    "search_restart": "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
}


def node_families(x: Exposition, full: set[str]) -> list[Metric]:
    """``--compat node``: node_exporter's conntrack metrics for every netns (a ``netns`` label added),
    and ``node_uname_info`` (awesome-prometheus-alerts joins on it). A quiet netns gets what the
    series budget gives it (entries, limit, drop, early_drop, insert_failed) unless ``--detail all``."""
    entries = GaugeMetricFamily("node_nf_conntrack_entries", NODE_ENTRIES[0], labels=["netns"])
    limit = GaugeMetricFamily("node_nf_conntrack_entries_limit", NODE_ENTRIES[1], labels=["netns"])
    stats = {k: GaugeMetricFamily(f"node_nf_conntrack_stat_{k}", h, labels=["netns"]) for k, h in NODE_STATS.items()}
    _count_and_limit(x, entries, limit)
    for s in x.samples:
        if not s.readable:
            continue
        for k, fam in stats.items():
            v = (s.stats or {}).get(k)
            if v is not None and (s.netns in full or k in QUIET_STATS):
                fam.add_metric([s.netns], v)
    u = os.uname()
    uname = GaugeMetricFamily("node_uname_info", "Labeled system information as provided by the uname system call.",
                              labels=["domainname", "machine", "nodename", "release", "sysname", "version"])
    uname.add_metric([x.domainname, u.machine, u.nodename, u.release, u.sysname, u.version], 1)
    return [entries, limit, *(stats[k] for k in sorted(stats)), uname]


def _server_families(sv: ServerStats) -> list[Metric]:
    build = GaugeMetricFamily(PREFIX + "build_info", "1, with the version of ctdoctor serving and its Python",
                              labels=["version", "python_version"])
    build.add_metric([__version__, platform.python_version()], 1)
    out: list[Metric] = [build]
    if sv.last_scrape_seconds is not None:
        d = GaugeMetricFamily(PREFIX + "exporter_scrape_duration_seconds",
                              "How long building the previous /metrics answer took")
        d.add_metric([], round(sv.last_scrape_seconds, 6))
        out.append(d)
    err = CounterMetricFamily(PREFIX + "exporter_scrape_errors", "/metrics answers that failed (HTTP 500)")
    err.add_metric([], sv.scrape_errors)
    rej = CounterMetricFamily(PREFIX + "exporter_http_rejected",
                              "Requests or connections the bounded server turned away, by reason: busy (503, too "
                              "many in flight), timeout (headers too slow), evicted (idle, to make room), "
                              "unauthorized (401), rate_limited (429)", labels=["reason"])
    for reason in ("busy", "timeout", "evicted", "unauthorized", "rate_limited"):
        rej.add_metric([reason], sv.rejected.get(reason, 0))
    conns = GaugeMetricFamily(PREFIX + "exporter_http_connections", "HTTP connections open now")
    conns.add_metric([], sv.connections)
    return [*out, err, rej, conns]


class _Collector:
    def __init__(self, fams: list[Metric]):
        self._fams = fams

    def collect(self) -> Iterator[Metric]:
        return iter(self._fams)

    def describe(self) -> list[Any]:
        return []


def render(x: Exposition, accept: str = "") -> tuple[bytes, str]:
    """(body, content type): the Prometheus text format, or OpenMetrics when the scraper asks for it.
    Served over HTTP it carries the exporter process's own ``process_*`` metrics too
    (prometheus_client's ProcessCollector, as every Go exporter has)."""
    encoder, ctype = choose_encoder(accept)
    fams = families(x)
    if x.server is not None:
        fams += list(ProcessCollector(registry=None).collect())
    return encoder(_Collector(fams)), ctype


def render_text(x: Exposition) -> bytes:
    return generate_latest(_Collector(families(x)))
