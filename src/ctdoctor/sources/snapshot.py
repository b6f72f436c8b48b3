"""Building the Snapshot (``ctdoctor.model.snapshot``): everything ctdoctor knows about a host.

Built the same way from the live host, a ctdoctor bundle or a sosreport: a
``NetnsView`` answers "read this file / this captured command inside that
netns" for each kind of root, and one function turns its answers into a
``NetnsState`` (here a ``ReadNetns``, which keeps its view for the reads that
come later: the listing, a second counter sample). Every fact records the file
(or command) it came from in ``sources``. Entries are never loaded here: a
view's ``open_listing()`` gives a stream. The checks never see a view:
``Snapshot.plain()`` leaves them behind.
"""

from __future__ import annotations

import calendar
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ctdoctor.errors import Failure, InputError, did_you_mean
from ctdoctor.model import kernel
from ctdoctor.model import modules as modmod
from ctdoctor.model.kernel import NF, canonical, parse_int
from ctdoctor.model.kernlog import KernelLogEvent
from ctdoctor.model.modules import ModuleInfo
from ctdoctor.model.pods import Pod
from ctdoctor.model.rules import RulesSummary
from ctdoctor.model.snapshot import NetnsState, Snapshot
from ctdoctor.model.textsafe import clean
from ctdoctor.sources import modules as modules_reader
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources import pods as podmod
from ctdoctor.sources.firewall import (
    RulesParseError,
    parse_iptables_list,
    parse_iptables_save,
    parse_nft_json,
    parse_nft_text,
)
from ctdoctor.sources.hostroot import BUNDLE, LIVE, SOSREPORT, HostRoot, mangle_command, run_command
from ctdoctor.sources.kernlog import assign_boots, dedupe, parse_kernel_log, rotated_logs
from ctdoctor.sources.persisted import read_persisted
from ctdoctor.sources.stats import StatsParseError, parse_conntrack_S, parse_proc_stat
from ctdoctor.sources.sysctl import parse_sysctl_a
from ctdoctor.sources.system import (
    boot_time,
    conntrack_slab,
    count_cpus,
    parse_date_output,
    parse_kernel_release,
    parse_meminfo,
    parse_slabinfo,
    parse_uptime_output,
)
from ctdoctor.sources.views import (
    LEGACY_NF_DIR,
    LEGACY_STAT,
    META,
    NF_DIR,
    NFT_RULESET,
    STAT,
    ImageNetnsView,
    Listing,
    LiveNetnsView,
    NetnsView,
    _read_meta,
)

T = TypeVar("T")
R = TypeVar("R")


# ---- the snapshot ---------------------------------------------------------------


@dataclass
class ReadNetns(NetnsState):
    """A NetnsState as it is read: with the view that reads more of it (its listing, a second counter
    sample). Checks never see one: ``Snapshot.plain()`` leaves the view behind."""

    view: NetnsView | None = None

    @property
    def ref(self) -> nsmod.NetnsRef | None:
        """The pinned live netns (None in an image)."""
        return self.view.ref if isinstance(self.view, LiveNetnsView) else None


def view_of(st: NetnsState) -> NetnsView | None:
    return st.view if isinstance(st, ReadNetns) else None


def ref_of(st: NetnsState) -> nsmod.NetnsRef | None:
    return st.ref if isinstance(st, ReadNetns) else None


def open_listing(st: NetnsState) -> Listing | None:
    """(stream, source, tailed) of this netns's /proc or saved entry listing, or None."""
    view = view_of(st)
    return view.open_listing() if view is not None else None


ViewItem = tuple[NetnsView, int | None, str]  # (view, inode, owner) of a selected netns


# ---- building ---------------------------------------------------------------------


def _views(root: HostRoot, wanted: str | None,
           notes: list[str] | None = None) -> list[ViewItem]:
    """(view, inode, owner) for the namespaces ``--netns`` selects."""
    if root.kind == LIVE:
        found = nsmod.discover()
        pods = live_pods(root, found) if len(found) > 1 else {}
        refs, vanished = nsmod.pin(nsmod.select(found, wanted, {i: p.label for i, p in pods.items()}))
        if notes is not None:
            notes.extend(f"netns {n} went away while it was read: left out" for n in vanished)
        views: list[ViewItem] = []
        for r in refs:
            v = LiveNetnsView(r)
            v.pod = pods.get(r.inode)
            views.append((v, r.inode, f"pod {v.pod.label}" if v.pod else r.owner))
        return views
    meta = _read_meta(root)
    items: list[ViewItem] = []
    if meta is not None:
        for ns in meta.get("namespaces", []):
            prefix = "" if ns["name"] == nsmod.INIT else f"ctdoctor/netns/{ns['name']}/"
            sos = None if ns["name"] == nsmod.INIT else ns.get("sos_name")
            items.append((ImageNetnsView(root, ns["name"], prefix, sos), ns.get("inode"), ns.get("owner", "")))
    if not items:
        items.append((ImageNetnsView(root, nsmod.INIT), None, ""))
        if root.kind == SOSREPORT:
            for name in sos_namespaces(root):
                items.append((ImageNetnsView(root, name, f"ctdoctor/netns/{name}/", name), None, "ip netns"))
    by_name = image_pods(root)
    for view, _inode, _owner in items:
        view.pod = by_name.get(view.name)
    items = [(v, i, f"pod {v.pod.label}" if v.pod and (not o or o == "ip netns") else o) for v, i, o in items]
    if not wanted or wanted == nsmod.INIT:
        return items[:1]
    tokens = [t.strip() for t in wanted.split(",") if t.strip()]
    if "all" in tokens:
        return items
    sel: list[ViewItem] = []
    for t in tokens:
        hit = [it for it in items if nsmod.matches(t, it[0].name, it[1], it[0].pod.label if it[0].pod else "",
                                                    it[0].name == nsmod.INIT)]
        if not hit:
            near = did_you_mean(t, [it[0].name for it in items])
            if near is not None:
                raise InputError(f"no netns {t!r}; did you mean {near!r}?")
            known = ", ".join(it[0].name for it in items)
            raise InputError(f"--netns {t}: no such network namespace in this image (known: {known})")
        sel.extend(it for it in hit if it not in sel)
    return sel


_NETNS_FILE = re.compile(r"^ip_netns_exec_(.+?)_(?:conntrack_-S|conntrack_-L|sysctl_-a|ip_|iptables|ip6tables|nft_|ss_|netstat)")


def sos_namespaces(root: HostRoot) -> list[str]:
    """The ip-netns names a sosreport captured: ``networking/namespaces/<ns>/`` (sos >= 4.3), else
    the ``networking/ip_netns`` listing with ``ip_netns_exec_<ns>_*`` files beside it (sos 4.0-4.2)."""
    names = list(root.listdir("sos_commands/networking/namespaces"))
    listing = root.read_text("sos_commands/networking/ip_netns") or ""
    for ln in listing.splitlines():
        w = ln.split()
        if w and re.fullmatch(r"[\w.:@+-]{1,255}", w[0]) and w[0] not in names and not ln.startswith("Object"):
            names.append(w[0])
    for plugin in ("networking", "conntrack"):
        for f in root.listdir(f"sos_commands/{plugin}"):
            m = _NETNS_FILE.match(f)
            if m and m.group(1) not in names:
                names.append(m.group(1))
    return names


def _created(root: HostRoot) -> float | None:
    """When a bundle was captured (meta.json ``created``, with its UTC offset), else None."""
    created = (_read_meta(root) or {}).get("created")
    if not isinstance(created, str):
        return None
    try:
        return datetime.strptime(created[:24], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        try:  # no offset: the capturing host's local time, the best we know
            return time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return None


def read_netns(view: NetnsView, inode: int | None, owner: str, notes: list[str],
               with_rules: bool = True) -> NetnsState:
    st = ReadNetns(view.name, inode, owner, view=view, pod=view.pod)
    want_nft = with_rules and isinstance(view, LiveNetnsView) and _nftlib_loaded()
    view.prefetch([STAT, LEGACY_STAT] + ([NFT_RULESET] if want_nft else []), [NF_DIR])
    # Settings: the /proc/sys tree when present, else `sysctl -a` output.
    names = view.listdir(NF_DIR)
    legacy = [] if names else [n for n in view.listdir(LEGACY_NF_DIR) if n.startswith("ip_conntrack")]
    files = view.read_many([f"{NF_DIR}/{n}" for n in names] + [f"{LEGACY_NF_DIR}/{n}" for n in legacy] +
                           [STAT, LEGACY_STAT])
    _read_settings(view, st, files, names, legacy)
    _read_stats(view, st, files, notes)
    recorded = view.recorded_second_sample(notes)
    if recorded is not None:
        st.stats_later, st.interval = recorded
    if with_rules:
        st.rules = read_rules(view, notes)
    return st


def _read_settings(view: NetnsView, st: NetnsState, files: dict[str, tuple[str, str]], names: list[str],
                   legacy: list[str]) -> None:
    """The netns's conntrack settings (and count, max, buckets): the /proc/sys files read, else `sysctl -a`."""
    for d, ns in ((NF_DIR, names), (LEGACY_NF_DIR, legacy)):
        for n in ns:
            got = files.get(f"{d}/{n}")
            if got:
                key = canonical(d.removeprefix("proc/sys/").replace("/", ".") + "." + n)
                st.settings[key] = got[0].strip()
                st.sources[key] = got[1]
    if not st.settings:
        cap = view.capture("kernel", "sysctl -a") if view.name == nsmod.INIT else view.capture("networking", "sysctl -a")
        if cap:
            for k, v in parse_sysctl_a(cap.text).items():
                ck = canonical(k)  # RHEL 5/6 name them net.ipv4.netfilter.ip_conntrack_*
                if ck.startswith(NF) or k == "net.nf_conntrack_max":
                    if ck in st.settings and ck != k:
                        continue  # the modern name wins over its legacy alias
                    st.settings[ck] = v
                    st.sources[ck] = cap.source
    _max_alias(view, st)
    for key, attr in (("nf_conntrack_count", "count"), ("nf_conntrack_max", "max"), ("nf_conntrack_buckets", "buckets")):
        num = parse_int(st.settings.get(NF + key))
        if num is not None:
            setattr(st, attr, num)
            st.sources[attr] = st.sources[NF + key]


def _read_stats(view: NetnsView, st: NetnsState, files: dict[str, tuple[str, str]], notes: list[str]) -> None:
    """The netns's per-CPU counters: the proc file, else `conntrack -S` (and the count from them if unknown)."""
    stat_rel = STAT if STAT in files else LEGACY_STAT
    if stat_rel in files:
        text, src = files[stat_rel]
        try:
            st.stats = parse_proc_stat(text, src)
            st.sources["stats"] = src
        except StatsParseError as e:
            notes.append(str(e))
    if st.stats is None:
        cap = view.capture("conntrack", "conntrack -S")
        if cap and "cpu=" in cap.text:
            try:
                st.stats = parse_conntrack_S(cap.text, cap.source)
                st.sources["stats"] = cap.source
            except StatsParseError as e:
                notes.append(str(e))
    if st.count is None and st.stats is not None and st.stats.entries is not None:
        st.count = st.stats.entries
        st.sources["count"] = st.stats.source + " (entries column)"


def _nftlib_loaded() -> bool:
    from ctdoctor.sources import nftlib  # ctypes: only a live read with rules pays for it

    return nftlib.load()


def _max_alias(view: NetnsView, st: NetnsState) -> None:
    """``net.nf_conntrack_max`` (``/proc/sys/net/nf_conntrack_max``, init netns only) where the image
    kept that file and not the net.netfilter one."""
    if NF + "nf_conntrack_max" in st.settings:
        return
    alias = view.read_many(["proc/sys/net/nf_conntrack_max"]).get("proc/sys/net/nf_conntrack_max")
    if alias and parse_int(alias[0]) is not None:
        st.settings[NF + "nf_conntrack_max"] = alias[0].strip()
        st.sources[NF + "nf_conntrack_max"] = alias[1]


def _sample_again(states: list[NetnsState], interval: float, since: float | None = None) -> None:
    """Second stats sample of every live netns, one interval after the first (``since``: when the first
    was taken, time.monotonic(); work done meanwhile shortens the wait, and the rates use the real gap)."""
    if since is None:
        time.sleep(interval)
    else:
        time.sleep(max(0.0, interval - (time.monotonic() - since)))
        interval = max(interval, time.monotonic() - since)

    def one(st: NetnsState) -> None:
        view = view_of(st)
        if st.stats is None or view is None:
            return
        try:
            later = view.sample_stats()
        except Failure:  # went away since: drop_vanished leaves it out
            return
        if later is not None:
            st.stats_later, st.interval = later, interval

    live = [st for st in states if isinstance(view_of(st), LiveNetnsView)]
    _each(one, live)


def read_rules(view: NetnsView, notes: list[str]) -> RulesSummary:
    s = RulesSummary()
    cap = view.capture("nftables", "nft -j list ruleset")
    if cap and cap.text.lstrip().startswith("{"):
        try:
            s.merge(parse_nft_json(cap.text, cap.source))
        except RulesParseError as e:
            notes.append(str(e))
    else:
        # sos >= 4: firewall_tables; sos 3.x: networking, or firewalld's own capture
        for plugin, cmd in (("firewall_tables", "nft -a list ruleset"), ("firewall_tables", "nft list ruleset"),
                            ("nftables", "nft -a list ruleset"), ("nftables", "nft list ruleset"),
                            ("networking", "nft list ruleset"), ("firewalld", "nft list ruleset")):
            cap = view.capture(plugin, cmd)
            if cap and _has_nft_header(cap.text):
                s.merge(parse_nft_text(cap.text, cap.source))
                break
    for plugin in ("firewall_tables", "networking"):
        found = False
        for cmd in ("iptables-save", "ip6tables-save"):
            cap = view.capture(plugin, cmd)
            if cap and re.search(r"^\*\w+", cap.text, re.MULTILINE):
                s.merge(parse_iptables_save(cap.text, cap.source))
                found = True
        if found:
            break
    if not s.seen:
        for cap in view.rule_listings():
            s.merge(parse_iptables_list(cap.text, cap.source))
    for text, source in view.saved_rule_files():
        s.merge(parse_iptables_save(text, source))
    return s


def _has_nft_header(text: str) -> bool:
    """nft's listing starts with a table (or is empty: no rules); an error message is not a ruleset."""
    t = text.lstrip()
    return t == "" or t.startswith(("table ", "# "))


def read_modules(root: HostRoot, snap: Snapshot) -> None:
    text = root.read_text("proc/modules")
    mods: dict[str, ModuleInfo] = {}
    if text is not None:
        mods = modules_reader.parse_proc_modules(text)
        snap.modules_source = "/proc/modules"
    else:
        cap = root.capture("kernel", "lsmod") if not root.is_live else None
        if cap:
            mods = modules_reader.parse_lsmod(cap.text, cap.source)
            snap.modules_source = cap.source
    have_list = bool(snap.modules_source)
    if have_list:
        snap.module_support = True
    elif root.is_live and root.is_dir("sys/module"):
        snap.module_support = False  # CONFIG_MODULES=n: everything conntrack has is built in
    builtin_list = set()
    if snap.release:
        bl = root.read_text(f"lib/modules/{snap.release}/modules.builtin") or \
            root.read_text(f"usr/lib/modules/{snap.release}/modules.builtin")
        if bl:
            builtin_list = {ln.rsplit("/", 1)[-1].removesuffix(".ko") for ln in bl.split()}
    for name in modmod.CONNTRACK_MODULES:
        mods[name] = _module(root, snap, mods.get(name) or ModuleInfo(name), builtin_list, have_list)
    snap.modules = mods


def _module(root: HostRoot, snap: Snapshot, info: ModuleInfo, builtin_list: set[str], have_list: bool) -> ModuleInfo:
    """One module's state: /sys/module (parameters, refcount, holders), else modules.builtin, else the
    module list's silence, else the sysctls' presence."""
    name = info.name
    sysdir = f"sys/module/{name}"
    if root.is_dir(sysdir):
        for p in root.listdir(f"{sysdir}/parameters"):
            v = root.read_text(f"{sysdir}/parameters/{p}")
            if v is not None:
                info.parameters[p] = v.strip()
        if info.state != modmod.LOADED:
            refcnt = root.read_text(f"{sysdir}/refcnt")
            if refcnt is not None:
                info.state = modmod.LOADED
                info.refcount = parse_int(refcnt)
                info.holders = root.listdir(f"{sysdir}/holders")
                info.source = f"/{sysdir}"
            else:
                info.state = modmod.BUILTIN
                info.source = f"/{sysdir} (no refcnt: built in)"
    if info.state == modmod.UNKNOWN:
        if name in builtin_list:
            info.state, info.source = modmod.BUILTIN, "modules.builtin"
        elif have_list:
            info.state, info.source = modmod.ABSENT, f"not in {snap.modules_source}"
        elif name == "nf_conntrack" and snap.settings.get(NF + "nf_conntrack_max") is not None:
            info.state, info.source = modmod.PRESENT, "conntrack sysctls present; no module list to tell loaded from built in"
    return info


def _not_before_birth(events: list[KernelLogEvent], root: HostRoot, snap: Snapshot) -> list[KernelLogEvent]:
    """Drop lines that name a live netns's inode but were logged before that netns existed: the
    kernel reuses inodes, so they belong to an earlier namespace (e.g. a deleted pod's)."""
    births = {}
    if root.is_live:
        live_boot = boot_time(root.read_text("proc/uptime"))
        if live_boot is None:
            return events
        boot = live_boot
        for st in snap.namespaces:
            ref = ref_of(st)
            if st.inode and ref is not None and not ref.is_init:
                try:
                    births[st.inode] = (os.stat(ref.path).st_ctime, st.name)
                except OSError:
                    pass
    else:  # a bundle: collect recorded the boot time and each namespace's birth
        meta = _read_meta(root) or {}
        recorded = meta.get("boot_time")
        if not isinstance(recorded, (int, float)):
            return events
        boot = float(recorded)
        for ns in meta.get("namespaces", []):
            born = ns.get("born")
            if isinstance(born, (int, float)) and ns.get("inode"):
                births[ns["inode"]] = (born, ns["name"])
    out, old = [], 0
    for e in events:
        b = births.get(e.netns_inode or 0)
        if b and e.mono and boot + float(e.mono) < b[0] - 2:
            old += 1
            continue
        out.append(e)
    if old:
        snap.notes.append(f"kernel log: {old} table-full line(s) name a namespace inode from before that namespace "
                          "existed (an earlier namespace had it): not counted")
    return out


def capture_time(root: HostRoot) -> tuple[float | None, str]:
    """When an image was captured, and from what: meta.json's ``created`` (a bundle), sos's ``date``
    output (local wall time, like the syslog lines it is compared with), the date in a sosreport's
    folder name."""
    created = _created(root)
    if created is not None:
        return created, META
    for rel in ("sos_commands/date/date", "date", "sos_commands/general/date", "sos_commands/date/date_--utc"):
        t = parse_date_output(root.read_text(rel, limit=4096))
        if t is not None:
            return t, "/" + rel
    m = re.search(r"(20\d\d)-([01]\d)-([0-3]\d)", Path(str(root.label)).name or "") or \
        re.search(r"(20\d\d)-([01]\d)-([0-3]\d)", root.path.name)
    if m:
        try:
            day = calendar.timegm((int(m.group(1)), int(m.group(2)), int(m.group(3)), 23, 59, 59, 0, 0, 0))
            return float(day), "the sosreport's name (its date, end of day)"
        except (ValueError, OverflowError):
            pass
    return None, ""


def image_boot_time(root: HostRoot, captured: float | None) -> float | None:
    """When the captured boot started: meta.json's ``boot_time``, else the capture time less the
    ``uptime`` sos recorded."""
    recorded = (_read_meta(root) or {}).get("boot_time")
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        return float(recorded)
    if captured is None:
        return None
    for rel in ("sos_commands/host/uptime", "sos_commands/general/uptime", "uptime", "proc/uptime"):
        up = parse_uptime_output(root.read_text(rel, limit=4096))
        if up is not None:
            return captured - up
    return None


def sos_timeouts(root: HostRoot) -> list[str]:
    """Plugins sos stopped because they ran too long (``sos_logs/ui.log``, ``sos.log``): their
    output is partial, so what they did not capture is unknown, not absent."""
    out: list[str] = []
    for rel in ("sos_logs/ui.log", "sos_logs/sos.log"):
        text = root.read_text(rel, limit=4 << 20) or ""
        for m in re.finditer(r"[Pp]lugin (\w+) timed out|(\w+) plugin timed out|Plugin (\w+) .*time(?:d)? ?out",
                             text):
            name = m.group(1) or m.group(2) or m.group(3)
            if name and name not in out:
                out.append(name)
    return out


# Journal captures sos writes, by version: (current boot, previous boot) or all boots.
JOURNAL_ALL = ("journalctl --no-pager",)
JOURNAL_BOOTS = ("journalctl --no-pager --boot",  # sos >= 4.4
                 "journalctl --no-pager --catalog --boot",  # sos 3.6-4.3
                 "journalctl --all --this-boot --no-pager",
                 "journalctl --no-pager --boot -1", "journalctl --no-pager --catalog --boot -1")
PREVIOUS_BOOT = ("journalctl --no-pager --boot -1", "journalctl --no-pager --catalog --boot -1")


def read_kernel_log(root: HostRoot, snap: Snapshot, given: str | None = None) -> None:
    """``given``: the kernel log as dmesg prints it, already read by the caller (the exporter follows
    /dev/kmsg and hands its refresh the conntrack lines: no dmesg run per refresh)."""
    if root.is_live:
        _live_kernel_log(root, snap, given)
    else:
        _image_kernel_log(root, snap)


def _live_kernel_log(root: HostRoot, snap: Snapshot, given: str | None) -> None:
    if given is not None:
        evs = parse_kernel_log(given, "dmesg")
        assign_boots(evs, snap.boot_time)
        snap.kernel_log.extend(_not_before_birth(evs, root, snap))
        snap.kernel_log_sources.append("/dev/kmsg")
        return
    cap = run_command("dmesg")
    if cap and not cap.text.startswith("dmesg: read kernel buffer failed"):
        evs = parse_kernel_log(cap.text, "dmesg")
        assign_boots(evs, snap.boot_time)
        snap.kernel_log.extend(_not_before_birth(evs, root, snap))
        snap.kernel_log_sources.append("dmesg")
    elif cap:
        snap.notes.append("dmesg: " + cap.text.strip().splitlines()[0])


def _image_kernel_log(root: HostRoot, snap: Snapshot) -> None:
    """dmesg, /var/log and its rotated pieces, and the journal, as an image captured them."""
    events: list[KernelLogEvent] = []
    ref = snap.captured_at

    def take(text: str, source: str, year_ref: float | None = ref, boot: int | None = None) -> None:
        evs = parse_kernel_log(text, source, year_ref)
        if boot is not None:
            for e in evs:
                e.boot = boot
        events.extend(evs)
        snap.kernel_log_sources.append(source)

    cap = root.capture("kernel", "dmesg")
    if cap:
        take(cap.text, cap.source)
    # /var/log and its rotated pieces (messages-20240310, kern.log.1, syslog.2.gz): the drops of
    # the night before the on-call reboot are often only there
    unreadable = []
    for name, _family, dated in rotated_logs(root.listdir("var/log")):
        text = root.read_log_text(f"var/log/{name}")
        if text is None:
            unreadable.append(name)
            continue
        if not text:
            continue
        year_ref = ref
        if dated is not None:  # the rotation date: the file's lines are from before it
            try:
                d = str(dated)
                year_ref = float(calendar.timegm((int(d[:4]), int(d[4:6]), int(d[6:8]), 23, 59, 59, 0, 0, 0)))
            except (ValueError, OverflowError):
                pass
        take(text, f"/var/log/{name}", year_ref)
    if unreadable:
        snap.notes.append("kernel log: could not read " + ", ".join(unreadable[:5]) + " (not a valid archive?)")
    caps = [c for c in (root.capture("logs", cmd) for cmd in JOURNAL_ALL) if c]
    if not caps:
        caps = [c for c in (root.capture("logs", cmd) for cmd in JOURNAL_BOOTS) if c]
    for c in caps:
        previous = any(c.source.endswith(mangle_command(p)) for p in PREVIOUS_BOOT)
        take(c.text, c.source, boot=-1 if previous else None)
    assign_boots([e for e in events if e.boot is None], snap.boot_time)
    snap.kernel_log, dropped = dedupe(_not_before_birth(events, root, snap))
    if dropped:
        snap.notes.append(f"kernel log: {dropped} line(s) found in more than one of "
                          f"{', '.join(snap.kernel_log_sources)} were counted once")


def _read_host(root: HostRoot, snap: Snapshot) -> None:
    """The host's own facts: when it was captured, its name, kernel, memory, CPUs, entry size."""
    if root.is_live:
        snap.captured_at, snap.captured_at_source = time.time(), "now"
        snap.boot_time = boot_time(root.read_text("proc/uptime"))
    else:
        snap.captured_at, snap.captured_at_source = capture_time(root)
        snap.boot_time = image_boot_time(root, snap.captured_at)
        snap.incomplete = sos_timeouts(root)
        if snap.incomplete:
            snap.notes.append("sos stopped these plugins (timed out), their output is partial: "
                              + ", ".join(snap.incomplete[:10]))
    hn = root.read_text("proc/sys/kernel/hostname") or root.read_text("etc/hostname")
    if hn is None and not root.is_live:
        cap = root.capture("general", "hostname") or root.capture("host", "hostname")
        hn = cap.text if cap else None
    snap.hostname = clean(hn)
    rel = root.read_text("proc/sys/kernel/osrelease")
    if rel is None and not root.is_live:
        cap = root.capture("kernel", "uname -a")
        if cap:
            parts = cap.text.split()
            rel = parts[2] if len(parts) > 2 else None
            snap.sources["release"] = cap.source
    else:
        snap.sources["release"] = "/proc/sys/kernel/osrelease"
    snap.release = clean(rel, 128)
    snap.version = parse_kernel_release(snap.release)
    mi = root.read_text("proc/meminfo")
    if mi:
        snap.mem_total = parse_meminfo(mi).get("MemTotal")
        snap.sources["mem_total"] = "/proc/meminfo"
    snap.cpus = count_cpus(root.read_text("proc/cpuinfo"), root.read_text("sys/devices/system/cpu/possible"))
    slab = root.read_text("proc/slabinfo")
    if slab:
        s = conntrack_slab(parse_slabinfo(slab))
        if s:
            snap.entry_size, snap.entry_size_source = s.objsize, f"/proc/slabinfo ({s.name} objsize)"


def build(root: HostRoot, netns: str | None = None, interval: float | None = None,
          with_rules: bool = True, with_log: bool = True, kernel_log: str | None = None) -> Snapshot:
    snap = Snapshot(source=root.kind, root_label=root.label)
    _read_host(root, snap)
    views = _views(root, netns, snap.notes)
    snap.namespaces.extend(_read_all(views, snap.notes, with_rules))
    snap.first_sample_at = time.monotonic()
    if interval and root.is_live:
        _sample_again(snap.namespaces, interval)
    drop_vanished(snap)
    if snap.namespaces and snap.namespaces[0].name == nsmod.INIT:
        snap.settings = dict(snap.namespaces[0].settings)
    else:
        init_view = _views(root, None)[0][0]
        snap.settings = read_netns(init_view, None, "", snap.notes, with_rules=False).settings
    # max is global: a netns that could not read it has the init value.
    gmax = parse_int(snap.settings.get(NF + "nf_conntrack_max"))
    for st in snap.namespaces:
        if st.max is None and gmax is not None:
            st.max = gmax
            st.sources["max"] = "global nf_conntrack_max"
    read_modules(root, snap)
    snap.sysctl_keys = _sysctl_keys(root)
    snap.persisted = read_persisted(root)
    snap.persisted.drop_keys_the_kernel_lacks(snap.kernel_has_key)
    if with_log:
        read_kernel_log(root, snap, kernel_log)
    if root.irregular:
        snap.notes.append("not regular files, left unread: " + ", ".join(sorted(set(root.irregular))[:5]))
    if root.denied:
        snap.notes.append("permission denied reading: " + ", ".join(sorted(set(root.denied))[:5]) +
                          " (run as root)")
    return snap


def live_pods(root: HostRoot, refs: list[nsmod.NetnsRef]) -> dict[int, Pod]:
    """{inode: Pod} of the live namespaces a Kubernetes pod holds (cgroups, then runtime metadata)."""
    return podmod.for_refs(refs, root.host_files(), HostRoot.live())


def image_pods(root: HostRoot) -> dict[str, Pod]:
    """{netns name: Pod} in an image: what ``collect`` recorded in meta.json, else sos's crictl captures."""
    out: dict[str, Pod] = {}
    for ns in (_read_meta(root) or {}).get("namespaces", []):
        p = ns.get("pod")
        if isinstance(p, dict) and isinstance(p.get("name"), str):
            out[ns["name"]] = Pod(str(p.get("namespace") or ""), p["name"], str(p.get("uid") or ""),
                                         str(p.get("container") or ""))
    if not out and root.kind == SOSREPORT:
        out = podmod.from_captures(root)
    return out


def _sysctl_keys(root: HostRoot) -> set[str] | None:
    """The conntrack sysctl keys the host's kernel has: a captured ``sysctl -a``, else the /proc/sys
    folders (live, or copied whole into an image)."""
    if not root.is_live:
        cap = root.capture("kernel", "sysctl -a")
        if cap:
            keys = set(parse_sysctl_a(cap.text))
            if len(keys) > 50:  # a whole listing, not a fragment
                return keys
    names = root.listdir(NF_DIR)
    if not names or (not root.is_live and not root.is_dir(LEGACY_NF_DIR)):
        return None  # an image may hold only some of /proc/sys: the kernel version decides then
    keys = {"net.netfilter." + n for n in names} | {"net.nf_conntrack_max"}
    keys |= {"net.ipv4.netfilter." + n for n in root.listdir(LEGACY_NF_DIR)}
    return keys


def sample_again(snap: Snapshot, interval: float) -> None:
    """The second counter sample, ``interval`` after the first (for a build made without one)."""
    _sample_again(snap.namespaces, interval, snap.first_sample_at)


def drop_vanished(snap: Snapshot) -> list[str]:
    """Leave out (with a note, and in ``snap.vanished``) the live namespaces that went away since they
    were found: a pod deleted mid-run is not a finding and not an error. Returns their names."""
    gone = []
    for st in list(snap.namespaces):
        ref = ref_of(st)
        if ref is not None and nsmod.gone(ref):
            snap.namespaces.remove(st)
            gone.append(st.name)
    for name in gone:
        if name not in snap.vanished:
            snap.vanished.append(name)
            snap.notes.append(f"netns {name} went away while it was read: left out")
    return gone


def netns_states(root: HostRoot, netns: str | None = None) -> tuple[list[NetnsState], list[str]]:
    """Just the namespaces' counts, max and listing sources (what `top` and `flush` need)."""
    notes: list[str] = []
    return _read_all(_views(root, netns, notes), notes, with_rules=False), notes


def _read_all(views: list[ViewItem], notes: list[str], with_rules: bool) -> list[NetnsState]:
    """Every selected netns; one deleted while we read (a pod went away) is left out with a note.
    Live namespaces are read several at a time: each read waits on a fork or a tool run inside
    the netns, so a node with hundreds of them is not read one after the other."""

    def one(item: ViewItem) -> NetnsState | None:
        view, inode, owner = item
        try:
            return read_netns(view, inode, owner, notes, with_rules)
        except Failure as e:
            ref = getattr(view, "ref", None)
            if ref is not None and nsmod.gone(ref):
                notes.append(f"netns {view.name} went away while it was read: left out")
                return None
            if ref is not None and "needs root" in str(e):  # an unprivileged run: what it can read, and a note
                notes.append(f"netns {view.name} could not be entered (needs root, CAP_SYS_ADMIN): left out")
                return None
            raise

    live = all(isinstance(view, LiveNetnsView) for view, _inode, _owner in views)
    return [st for st in _each(one, views, parallel=live) if st is not None]


def _each(fn: Callable[[T], R], items: list[T], parallel: bool = True) -> list[R]:
    """``[fn(x) for x in items]``; with ``parallel``, in a few threads (each waits on the kernel or a tool
    in a netns, so a node with hundreds of namespaces is not read one after the other)."""
    if not parallel or len(items) < 4:
        return [fn(x) for x in items]
    # imported here: concurrent.futures (and the logging it loads) costs an image's doctor ~10 ms it never needs
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(items)), thread_name_prefix="ctdoctor-netns") as pool:
        return list(pool.map(fn, items))


def entry_memory(snap: Snapshot, count: int | None) -> dict[str, Any] | None:
    """Bytes the entries take: slab objsize × count, else an estimate that says so."""
    if count is None:
        return None
    if snap.entry_size:
        return {"bytes": snap.entry_size * count, "entry_size": snap.entry_size,
                "estimated": False, "source": snap.entry_size_source}
    size = kernel.estimated_entry_size(snap.version)
    return {"bytes": size * count, "entry_size": size, "estimated": True,
            "source": "estimate: /proc/slabinfo not readable"}


__all__ = ["BUNDLE", "LIVE", "SOSREPORT", "NetnsState", "Snapshot", "build", "entry_memory"]
