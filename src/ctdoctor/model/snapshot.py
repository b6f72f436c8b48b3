"""The Snapshot and the facts: everything ctdoctor knows about a host, as plain data.

``sources.snapshot`` builds the Snapshot (from the live host, a bundle or a sosreport) and
``diagnose.facts`` the Facts (listing summaries, socket counts, the distribution, ...), both
before any check runs. Nothing here reads a file or holds one open: checks see only these.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ctdoctor.model.kernlog import KernelLogEvent
from ctdoctor.model.modules import ModuleInfo
from ctdoctor.model.persisted import Persisted
from ctdoctor.model.pods import Pod
from ctdoctor.model.rules import RulesSummary
from ctdoctor.model.stats import CpuStats

# a NETLINK_NETFILTER socket subscribed to conntrack events: inode, portid, unread_bytes, drops, and the
# pid and comm of the process that holds it when found
Listener = dict[str, int | str]

INIT = "init"  # the name of the host's own (initial) network namespace


@dataclass
class NetnsState:
    name: str
    inode: int | None
    owner: str = ""
    count: int | None = None
    max: int | None = None
    buckets: int | None = None
    settings: dict[str, str] = field(default_factory=dict)  # net.netfilter.* in this netns
    stats: CpuStats | None = None
    stats_later: CpuStats | None = None  # second sample, for rates
    interval: float | None = None  # seconds between the two samples
    rules: RulesSummary = field(default_factory=RulesSummary)
    sources: dict[str, str] = field(default_factory=dict)
    pod: Pod | None = None  # the Kubernetes pod that holds it, when one does

    @property
    def label(self) -> str:
        """How reports name it: ``cni-5f3c (kube-system/coredns-5d78c)``, or just the name."""
        return f"{self.name} ({self.pod.label})" if self.pod else self.name

    @property
    def fill(self) -> float | None:
        if self.count is None or not self.max:
            return None
        return self.count / self.max

    def rates(self) -> dict[str, float] | None:
        if not self.stats or not self.stats_later or not self.interval:
            return None
        a, b = self.stats.sums, self.stats_later.sums
        return {k: round(max(b.get(k, 0) - v, 0) / self.interval, 3) for k, v in a.items()}

    def plain(self) -> NetnsState:
        """This state as a plain NetnsState (what a reader's subclass holds besides is left behind)."""
        if type(self) is NetnsState:
            return self
        return NetnsState(**{f.name: getattr(self, f.name) for f in fields(NetnsState)})


@dataclass
class Snapshot:
    source: str  # live | bundle | sosreport
    root_label: str
    hostname: str = ""
    release: str = ""
    version: tuple[int, int, int] | None = None
    cpus: int | None = None
    mem_total: int | None = None
    entry_size: int | None = None  # slab objsize of nf_conntrack
    entry_size_source: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # init netns, all net.netfilter + aliases
    namespaces: list[NetnsState] = field(default_factory=list)
    modules: dict[str, ModuleInfo] = field(default_factory=dict)
    modules_source: str = ""
    module_support: bool | None = None  # False: the kernel cannot load modules (no /proc/modules)
    persisted: Persisted = field(default_factory=Persisted)
    kernel_log: list[KernelLogEvent] = field(default_factory=list)
    kernel_log_sources: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what could not be read, and why
    captured_at: float | None = None  # when the host was read: now live, meta.json's "created", sos's `date`
    captured_at_source: str = ""
    boot_time: float | None = None  # when the host's current boot started (same clock as captured_at)
    incomplete: list[str] = field(default_factory=list)  # sos plugins that timed out: their data is partial
    sysctl_keys: set[str] | None = None  # every conntrack sysctl key the kernel has (None: no full list)
    vanished: list[str] = field(default_factory=list)  # namespaces that went away while they were read
    first_sample_at: float = 0.0  # time.monotonic() when the counters were first read (live)

    def kernel_has_key(self, raw: str) -> bool | None:
        """Whether the running kernel has this sysctl key: from the captured key list, else from the
        kernel version for the ``ip_conntrack`` compatibility names (gone with the l3proto code in
        4.19); None when nothing tells."""
        if self.sysctl_keys is not None:
            return raw in self.sysctl_keys
        if raw.startswith("net.ipv4.netfilter.ip_conntrack_") and self.version is not None:
            return self.version < (4, 19, 0)
        return None

    @property
    def init(self) -> NetnsState | None:
        return self.namespaces[0] if self.namespaces and self.namespaces[0].name == INIT else None

    def plain(self) -> Snapshot:
        """A copy whose namespaces are plain NetnsStates (no reader's handles); lists it shares with
        this one: ``notes``, ``kernel_log``."""
        if all(type(st) is NetnsState for st in self.namespaces):
            return self
        out = Snapshot(**{f.name: getattr(self, f.name) for f in fields(Snapshot) if f.name != "namespaces"})
        out.namespaces = [st.plain() for st in self.namespaces]
        return out


@dataclass
class ListingSummary:
    """One netns's entry listing, tallied: how many entries, their states and protocols, the top keys."""

    listed: int
    sample: bool  # the listing was cut (sosreport tail): counts are of a sample
    source: str
    states: dict[str, int]
    protos: dict[str, int]
    top: dict[str, list[tuple[str | None, int]]]  # src/dst/dport -> [(value, count)] largest first
    unreadable: int = 0  # lines skipped because they were not entries
    proto_states: dict[tuple[str, str], int] = field(default_factory=dict)  # (proto, state mix label) -> n
    tunnels: dict[str, int] = field(default_factory=dict)  # vxlan/geneve/vxlan-8472/gre -> entries
    count_after: int | None = None  # the netns's count read right after the listing (live)
    read_seconds: float | None = None  # how long reading the listing took (live)
    tool: str = ""  # what wrote a saved listing ("conntrack-tools 1.4.4"); "" for the kernel's own
    families: str = "all"  # what the listing covers: "all", or "ipv4" (conntrack -L without -f before 1.4.7)
    top_every: int = 1  # src/dst tops counted on every n-th entry and scaled (the exporter's refresh)


NO_LISTING = "no entry listing (live /proc, ctnetlink, or a saved one)"


class NotGathered(LookupError):
    """A check asked for a fact the facts builder did not gather: a bug (its ``needs`` missed it)."""


@dataclass
class Facts:
    """What checks know beyond the Snapshot, gathered before they run (``diagnose.facts``), keyed by
    netns name. A netns missing from a mapping was not gathered (asking for it is a bug); one mapped
    to None was asked for and could not be read (``summary_errors`` says why)."""

    live: bool = False
    summaries: dict[str, ListingSummary | None] = field(default_factory=dict)
    summary_errors: dict[str, str] = field(default_factory=dict)
    sockets: dict[str, int | None] = field(default_factory=dict)  # ESTABLISHED TCP sockets
    socket_sources: dict[str, str] = field(default_factory=dict)
    listeners: dict[str, list[Listener]] = field(default_factory=dict)  # live only
    distro: str = "other"  # rhel | debian | other
    expectations: tuple[int | None, str | None] = (None, None)  # (entries, source)
    ovs: tuple[dict[str, int], str] | None = None  # tunnel entries in Open vSwitch's dump, and its source
    plan_max: int | None = None  # the max ``plan`` picks (default headroom): the fixes of CT001/CT018 name it

    def summary(self, name: str) -> ListingSummary | None:
        if name not in self.summaries:
            raise NotGathered(f"the listing summary of netns {name} was not gathered")
        return self.summaries[name]

    def summary_missing_reason(self, name: str) -> str:
        return self.summary_errors.get(name) or NO_LISTING

    def established_sockets(self, name: str) -> int | None:
        if name not in self.sockets:
            raise NotGathered(f"the socket count of netns {name} was not gathered")
        return self.sockets[name]

    def sockets_source(self, name: str) -> str:
        return self.socket_sources.get(name, "ss -tanH state established")

    def event_listeners(self, name: str) -> list[Listener]:
        if not self.live:
            return []
        if name not in self.listeners:
            raise NotGathered(f"the event listeners of netns {name} were not gathered")
        return self.listeners[name]
