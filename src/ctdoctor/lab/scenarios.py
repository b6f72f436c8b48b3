"""The lab's scenarios: each builds an incident and records what a user would observe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable

from ctdoctor.lab import LabNetns, LabRun, missing_requirements, own_kernel_log, uptime
from ctdoctor.listing.entry import Entry

SERVICE_PORT = 8080


def _tcp_lines(n: int, *, dport: int = 80, timeout: int = 431999, src: str = "127.0.0.1", first: int = 0) -> str:
    """n distinct ASSURED ESTABLISHED TCP entries on loopback from ``src``, as `conntrack -o save` lines
    (``first``: the index to start at, so a second batch does not repeat the first)."""
    out = []
    for i in range(first, first + n):
        dst = f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        out.append(f"-A -t {timeout} -u SEEN_REPLY,ASSURED -s {src} -d {dst} -r {dst} -q {src} "
                   f"-p tcp --sport 40000 --dport {dport} --reply-port-src {dport} --reply-port-dst 40000 "
                   f"--state ESTABLISHED\n")
    return "".join(out)


def _udp_unreplied_lines(n: int, *, timeout: int = 600, first: int = 0) -> str:
    out = []
    for i in range(first, first + n):
        dst = f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        out.append(f"-A -t {timeout} -u UNSET -s 127.0.0.1 -d {dst} -r {dst} -q 127.0.0.1 -p udp "
                   f"--sport 40000 --dport 53 --reply-port-src 53 --reply-port-dst 40000\n")
    return "".join(out)


def _fill(ns: LabNetns, gmax: int, make_lines: Callable[..., str]) -> int:
    """Load entries until the netns's count reaches the max; conntrack -R can leave a few out under load,
    so the rest is topped up with entries not loaded before. Returns how many were loaded."""
    loaded = 0
    for _ in range(4):
        need = gmax - ns.count()
        if need <= 0:
            break
        ns.load(make_lines(need, first=loaded))
        loaded += need
    return loaded


def _global_max() -> int:
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        return int(f.read())


def _state_mix(entries: Iterable[Entry]) -> dict[str, int]:
    mix: dict[str, int] = {}
    for e in entries:
        k = e.state or e.proto.upper()
        if e.unreplied:
            k += " [UNREPLIED]"
        mix[k] = mix.get(k, 0) + 1
    return dict(sorted(mix.items(), key=lambda kv: -kv[1]))


class Scenario:
    name = ""
    summary = ""
    scale_meaning = ""
    default_scale = 1
    explanation = ""

    def unavailable(self) -> str | None:
        return None

    def build(self, run: LabRun, scale: int) -> None:
        raise NotImplementedError


class TableFull(Scenario):
    name = "table-full"
    summary = "netns filled to nf_conntrack_max with ASSURED entries: new connections fail, old ones live"
    scale_meaning = "new connection attempts after the fill"
    default_scale = 3
    explanation = (
        "Every netns counts its own entries against the one global nf_conntrack_max. When the count reaches "
        "it, the kernel first tries early drop, which may only evict entries that are not ASSURED; with only "
        "ASSURED entries it has nothing to evict, so it drops the new packet (the `drop` counter) and logs "
        "'table full'. Packets of connections that already have an entry still match it, so established "
        "sockets keep working while every new connection's SYN is dropped and times out.")

    def build(self, run: LabRun, scale: int) -> None:
        ns = run.netns
        sess = ns.spawn("session", SERVICE_PORT)
        run.say(f"echo server on 127.0.0.1:{SERVICE_PORT} and one held client connection")
        since = uptime()
        before = ns.stats()
        gmax = _global_max()
        t0 = time.monotonic()
        need = _fill(ns, gmax, _tcp_lines)
        run.say(f"loaded {need} ASSURED ESTABLISHED entries over ctnetlink (conntrack -R) "
                f"in {time.monotonic() - t0:.1f}s; global nf_conntrack_max {gmax} unchanged")
        attempts = [ns.ask(sess, "connect 1") for _ in range(scale)]
        held = ns.ask(sess, "echo 3")
        after = ns.stats()
        time.sleep(0.2)
        log = own_kernel_log(ns.inode or 0, since)
        run.observed.update({
            "count": ns.count(), "max": gmax,
            "new_connections": attempts,
            "new_connections_failed": sum(1 for a in attempts if not a["ok"]),
            "held_connection_still_works": held["ok"],
            "established_sockets": ns.sockets(),
            "drop_delta": after.get("drop", 0) - before.get("drop", 0),
            "early_drop_delta": after.get("early_drop", 0) - before.get("early_drop", 0),
            "kernel_log": log,
            "kernel_log_names_netns": any(f"in netns {ns.inode}" in ln for ln in log),
        })


class EarlyDrop(Scenario):
    name = "early-drop"
    summary = "table full of unreplied UDP flows: new flows evict them (early_drop rises, drop stays 0)"
    scale_meaning = "new UDP flows sent once the table is full"
    default_scale = 500
    explanation = (
        "At nf_conntrack_max the kernel looks a few hash buckets around the new flow for an entry that is not "
        "ASSURED and evicts it (early_drop) to make room. Unreplied UDP flows are never ASSURED, so each new "
        "flow silently pushes an old one out: nothing is dropped, but flows that were waiting for an answer "
        "lose their state. Only when every nearby entry is ASSURED does the kernel drop the packet instead.")

    def build(self, run: LabRun, scale: int) -> None:
        ns = run.netns
        gmax = _global_max()
        need = _fill(ns, gmax, _udp_unreplied_lines)
        run.say(f"loaded {need} unreplied (not ASSURED) UDP entries; count {ns.count()} / max {gmax}")
        before = ns.stats()
        sent = ns.traffic("udp", 9, scale)["sent"]
        after = ns.stats()
        run.say(f"sent {sent} new UDP flows to 127.0.0.1:9")
        run.observed.update({
            "count": ns.count(), "max": gmax, "new_flows": sent,
            "early_drop_delta": after.get("early_drop", 0) - before.get("early_drop", 0),
            "drop_delta": after.get("drop", 0) - before.get("drop", 0),
        })


class TimeWaitPileup(Scenario):
    name = "time-wait-pileup"
    summary = "many short TCP connections: TIME_WAIT entries dominate the table for 120 s"
    scale_meaning = "short connections"
    default_scale = 2000
    explanation = (
        "A closed TCP connection keeps its conntrack entry in TIME_WAIT for nf_conntrack_tcp_timeout_time_wait "
        "(120 s), independent of the sockets' own TIME_WAIT (60 s). A service that opens many short "
        "connections (health checks, HTTP/1.0 clients, DNS over TCP) fills the table with entries of "
        "connections that no longer exist.")

    def build(self, run: LabRun, scale: int) -> None:
        ns = run.netns
        res = ns.traffic("short", SERVICE_PORT, scale, timeout=120)
        run.say(f"{res['connections']} short connections to 127.0.0.1:{SERVICE_PORT}, closed by the client")
        es = ns.entries()
        mix = _state_mix(es)
        tw = [e for e in es if e.state == "TIME_WAIT"]
        run.observed.update({
            "count": ns.count(), "state_mix": mix, "time_wait": len(tw),
            "time_wait_share": round(len(tw) / max(len(es), 1), 4),
            "time_wait_timeout": ns.sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait"),
            "max_remaining_timeout": max((e.timeout or 0) for e in tw) if tw else None,
            "socket_time_wait": len(ns.sockets("time-wait")),
        })


class SynUnreplied(Scenario):
    name = "syn-unreplied"
    summary = "SYNs that get no answer: SYN_SENT [UNREPLIED] entries pile up for 120 s"
    scale_meaning = "connection attempts"
    default_scale = 500
    explanation = (
        "A SYN creates an entry in SYN_SENT that stays for nf_conntrack_tcp_timeout_syn_sent (120 s) when no "
        "SYN-ACK comes back: a dead backend, a firewall dropping the answer, or a SYN flood or port scan. "
        "These entries are not ASSURED, so at the max they are the first evicted by early drop.")

    def build(self, run: LabRun, scale: int) -> None:
        ns = run.netns
        ns.nft("add chain inet ctdlab in { type filter hook input priority 0; };"
               " add rule inet ctdlab in tcp dport 9999 tcp flags syn drop")
        run.say("nft rule dropping SYNs to 127.0.0.1:9999 on input (the answer never comes)")
        res = ns.traffic("syn", 9999, scale, 0.5)
        es = ns.entries()
        syn = [e for e in es if e.state == "SYN_SENT" and e.unreplied]
        run.say(f"{res['attempts']} non-blocking connects to 127.0.0.1:9999")
        run.observed.update({
            "count": ns.count(), "syn_sent_unreplied": len(syn), "state_mix": _state_mix(es),
            "syn_sent_timeout": ns.sysctl("net.netfilter.nf_conntrack_tcp_timeout_syn_sent"),
        })


class NatLoopback(Scenario):
    name = "nat-loopback"
    summary = "output-hook DNAT on loopback: entries whose reply tuple is not the inverted original"
    scale_meaning = "connections through the DNAT"
    default_scale = 20
    explanation = (
        "NAT is recorded in the entry: the original tuple is what the client sent (127.0.0.1:8080), the reply "
        "tuple is what the server answers from (127.0.0.1:9090). Tools that group by the original destination "
        "see the service address; the reply source shows the real backend. Without conntrack there is no NAT: "
        "unloading it (or a full table) breaks translated traffic first.")

    def build(self, run: LabRun, scale: int) -> None:
        ns = run.netns
        ns.nft("add table ip ctdlab_nat; add chain ip ctdlab_nat out { type nat hook output priority -100; };"
               " add rule ip ctdlab_nat out ip daddr 127.0.0.1 tcp dport 8080 dnat to 127.0.0.1:9090")
        run.say("nft nat table: output hook, tcp dport 8080 dnat to 127.0.0.1:9090")
        p = ns.spawn("connect-many", 8080, scale, 30, 9090)
        res = p.ready
        es = ns.entries()
        natted = [e for e in es if e.proto == "tcp" and e.orig.dport == 8080 and e.reply.sport == 9090]
        run.say(f"{res['ok']}/{res['attempts']} connections to 127.0.0.1:8080 answered by the server on 9090")
        run.observed.update({
            "count": ns.count(), "connections_ok": res["ok"], "natted_entries": len(natted),
            "example": {"orig": f"{natted[0].orig.src}:{natted[0].orig.sport} -> {natted[0].orig.dst}:"
                                f"{natted[0].orig.dport}",
                        "reply": f"{natted[0].reply.src}:{natted[0].reply.sport} -> {natted[0].reply.dst}:"
                                 f"{natted[0].reply.dport}"} if natted else None,
        })


class Untracked(Scenario):
    name = "untracked"
    summary = "raw-priority notrack for one port: ESTABLISHED sockets with no conntrack entry"
    scale_meaning = "connections to the untracked port"
    default_scale = 5
    explanation = (
        "NOTRACK (nft `notrack` in a raw-priority chain) keeps a port's packets out of conntrack: no entry, no "
        "table pressure. But their ct state is 'untracked', which is neither new nor established: a stateful "
        "filter that accepts only `ct state established,related` drops them, so the rule set needs "
        "`ct state untracked accept` (iptables: `-m conntrack --ctstate UNTRACKED -j ACCEPT`). `ss` shows such "
        "connections ESTABLISHED while `conntrack -L` has nothing for them.")

    def build(self, run: LabRun, scale: int) -> None:
        ns = run.netns
        port = 7070
        ns.nft("add table inet ctdlab_raw; add chain inet ctdlab_raw out { type filter hook output priority raw; };"
               f" add rule inet ctdlab_raw out tcp dport {port} notrack;"
               f" add rule inet ctdlab_raw out tcp sport {port} notrack;"
               " add chain inet ctdlab in { type filter hook input priority 0; policy drop; };"
               " add rule inet ctdlab in ct state established,related accept;"
               f" add rule inet ctdlab in tcp dport {SERVICE_PORT} accept")
        run.say(f"notrack for tcp port {port} (raw priority, both directions); input policy drop with "
                "'ct state established,related accept' only")
        ns.spawn("connect-many", port, 0, 60, port)  # a server on the port, no clients yet
        without = ns.traffic("connect", port, 1.0)
        run.say(f"connect to 127.0.0.1:{port} without an untracked accept rule: "
                f"{'ok' if without['ok'] else 'fails (' + without.get('error', '') + ')'}")
        ns.nft("add rule inet ctdlab in ct state untracked accept")
        run.say("added 'ct state untracked accept' to the input chain")
        held = ns.spawn("connect-many", port, scale, 60)
        es = ns.entries()
        on_port = [e for e in es if e.proto == "tcp" and port in (e.orig.sport, e.orig.dport)]
        socks = [s for s in ns.sockets() if f":{port}" in s]
        run.observed.update({
            "connect_without_untracked_accept": without["ok"],
            "connections_ok": held.ready["ok"],
            "entries_for_port": len(on_port),
            "established_sockets_for_port": len(socks),
            "count": ns.count(),
        })


class CountMismatch(Scenario):
    name = "count-mismatch"
    summary = "nf_conntrack_count far above the listed entries: destroy events nobody reads"
    scale_meaning = "entries deleted while the event listener is stuck"
    default_scale = 2000
    explanation = (
        "nf_conntrack_count counts every allocated entry, /proc/net/nf_conntrack lists only those in the hash. "
        "When a ctnetlink listener asks for reliable delivery (NETLINK_BROADCAST_ERROR, as conntrackd does) and "
        "stops reading, destroy events cannot be delivered: deleted entries leave the hash but stay allocated "
        "and counted, waiting for redelivery (since 5.19 on the per-netns ecache dying list; before 5.19 on "
        "the per-CPU dying list, where unconfirmed entries also waited). They still count against "
        "nf_conntrack_max. Once the listener reads or exits, they are freed.")

    def unavailable(self) -> str | None:
        try:
            with open("/proc/sys/net/netfilter/nf_conntrack_events") as f:
                if f.read().strip() == "0":
                    return "nf_conntrack_events is 0: no events, so no undelivered ones"
        except OSError:
            return "no nf_conntrack_events sysctl (kernel without conntrack events)"
        return None

    def build(self, run: LabRun, scale: int) -> None:
        ns = run.netns
        listener = ns.spawn("listen-events", 120)
        run.say("ctnetlink destroy-event listener with NETLINK_BROADCAST_ERROR and a 1-byte buffer, never reading")
        ns.load(_tcp_lines(scale))
        loaded = ns.count()
        ns.exec("conntrack", "-F")
        run.say(f"loaded {loaded} entries, then deleted them all (conntrack -F)")
        time.sleep(0.3)
        count, listed = ns.count(), ns.listed()
        listener.inp.close()
        listener.wait(timeout=10)
        deadline = time.monotonic() + 10
        while ns.count() > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        run.say("stopped the listener")
        run.observed.update({
            "loaded": loaded, "count_while_stuck": count, "listed_while_stuck": listed,
            "count_after_listener_exit": ns.count(),
        })


# Sleeps until the CLOCK_MONOTONIC time argv[1], then prints the count, the lines listed, the count.
_GC_LAG_PROBE = """
import sys, time
time.sleep(max(0.0, float(sys.argv[1]) - time.monotonic()))
def count():
    with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
        return int(f.read())
before = count()
with open("/proc/net/nf_conntrack", "rb") as f:
    listed = f.read().count(b"\\n")
print(before, listed, count())
"""


class GcLag(Scenario):
    name = "gc-lag"
    summary = "expired entries still counted until the garbage collector (or a read of the table) frees them"
    scale_meaning = "UDP entries loaded with a 2 s timeout"
    default_scale = 2000
    explanation = (
        "An entry whose timeout ran out is not freed at once: the kernel's garbage collector walks the table "
        "in passes (about every 10 s with 10 s timeouts, up to a minute when other namespaces hold long-lived "
        "entries), and until it reaches an expired entry, nf_conntrack_count still counts it. Reading the table "
        "(cat /proc/net/nf_conntrack, conntrack -L) skips expired entries and frees the ones it passes: the count "
        "read before the listing is far above the lines listed, the count read after it is not. That gap is "
        "not stuck entries (CT004 compares with the count read after the listing).")

    def build(self, run: LabRun, scale: int) -> None:
        ns = run.netns
        ns.load(_udp_unreplied_lines(scale, timeout=2))
        loaded_at = time.monotonic()  # every entry was made before conntrack -R returned
        loaded = ns.count()
        run.say(f"loaded {loaded} UDP entries with a 2 s timeout")
        # the count is read the moment the last entry expired (an entry made at jiffy J expires at tick
        # J + 2 s, at or before its making + 2 s; 3 ms for the clocks), by a process started in the netns
        # before (CLOCK_MONOTONIC is the host's): any ctnetlink dump on the host (conntrack -L, a monitor
        # in another netns) frees the expired entries of every netns it passes, so on a busy host each
        # moment between the expiry and the read lets someone else's read hide what this shows
        r = ns.exec(sys.executable, "-S", "-c", _GC_LAG_PROBE, repr(loaded_at + 2.003))
        before, listed, after = (int(x) for x in r.stdout.split())
        run.say(f"{time.monotonic() - loaded_at:.1f} s later: count {before}, lines listed {listed}, "
                f"count after the listing {after}")
        run.observed.update({"loaded": loaded, "count_before_listing": before, "listed": listed,
                             "count_after_listing": after})


CGROUP_V1 = "/sys/fs/cgroup/pids"


def _fake_pod(run: LabRun, host: str, namespace: str, name: str) -> tuple[LabNetns, str, str]:
    """A netns held by a process placed in a cgroup with kubelet's path (cgroupfs driver,
    ``/kubepods/besteffort/pod<UID>/<container id>``), with containerd's spec (its CRI annotations)
    and kubelet's pod log folder under ``host``. Everything is removed after the run."""
    ns = LabNetns(run.scenario).create()
    run.cleanups.append(ns.destroy)
    uid, cid = str(uuid.uuid4()), uuid.uuid4().hex + uuid.uuid4().hex
    holder = subprocess.Popen(["ip", "netns", "exec", ns.name, "sleep", "3600"])
    def stop_holder() -> None:
        holder.kill()
        holder.wait(timeout=10)

    run.cleanups.append(stop_holder)
    cg = f"{CGROUP_V1}/kubepods/besteffort/pod{uid}/{cid}"
    os.makedirs(cg)

    def rm_cgroup() -> None:
        holder.kill()
        holder.wait(timeout=10)
        for d in (cg, os.path.dirname(cg)):
            os.rmdir(d)
        for d in (f"{CGROUP_V1}/kubepods/besteffort", f"{CGROUP_V1}/kubepods"):
            try:  # only when nothing else (a real kubelet) uses them
                os.rmdir(d)
            except OSError:
                break

    run.cleanups.append(rm_cgroup)
    with open(f"{cg}/cgroup.procs", "w") as f:
        f.write(str(holder.pid))
    os.makedirs(f"{host}/var/log/pods/{namespace}_{name}_{uid}/app")
    task = f"{host}/run/containerd/io.containerd.runtime.v2.task/k8s.io/{cid}"
    os.makedirs(task)
    with open(f"{task}/config.json", "w") as f:
        json.dump({"ociVersion": "1.1.0", "annotations": {
            "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.container-name": "app",
            "io.kubernetes.cri.sandbox-name": name, "io.kubernetes.cri.sandbox-namespace": namespace,
            "io.kubernetes.cri.sandbox-uid": uid}}, f)
    return ns, uid, cid


class K8sNode(Scenario):
    name = "k8s-node"
    summary = "pods on a node: netns held by processes in kubelet-shaped cgroups; one floods DNS, one fills its table"
    scale_meaning = "quiet pods beside the two busy ones"
    default_scale = 3
    keepable = False
    explanation = (
        "On a Kubernetes node every pod has its own network namespace, and each counts its entries against the "
        "one global nf_conntrack_max. The host's own table (conntrack -L, node_exporter) shows none of them. "
        "ctdoctor finds each pod's namespace through its processes: their cgroup names the pod's UID and the "
        "container (kubelet's path), and the runtime's metadata (containerd's config.json annotations, "
        "kubelet's /var/log/pods folders) names the pod. Run the commands with --host-root HOST_ROOT (the "
        "folder this scenario printed) to see the pods by name: ctdoctor status --netns all --host-root ...")

    def unavailable(self) -> str | None:
        return None if os.path.isdir(CGROUP_V1) else f"no cgroup v1 pids hierarchy at {CGROUP_V1}"

    def build(self, run: LabRun, scale: int) -> None:
        host = tempfile.mkdtemp(prefix="ctdlab-k8s-host-")
        run.cleanups.append(lambda: shutil.rmtree(host, ignore_errors=True))
        run.say(f"host metadata (containerd specs, kubelet pod logs) under {host}: use --host-root {host}")
        pods = []
        dns, _, _ = _fake_pod(run, host, "kube-system", "coredns-lab")
        full, _, _ = _fake_pod(run, host, "shop", "checkout-lab")
        quiet = [_fake_pod(run, host, "team", f"idle-{i}")[0] for i in range(scale)]
        before = dns.stats()
        sent = dns.traffic("udp", 53, 2000)
        after = dns.stats()
        run.say(f"kube-system/coredns-lab: {sent.get('sent')} DNS queries from fresh source ports, unanswered")
        gmax = _global_max()
        loaded = _fill(full, gmax, _tcp_lines)
        run.say(f"shop/checkout-lab: filled to the global max {gmax} ({loaded} ASSURED entries loaded)")
        for ns, pod in ((dns, "kube-system/coredns-lab"), (full, "shop/checkout-lab"),
                        *((q, f"team/idle-{i}") for i, q in enumerate(quiet))):
            pods.append({"netns": ns.name, "inode": ns.inode, "pod": pod, "count": ns.count()})
        run.observed.update({"host_root": host, "pods": pods, "max": gmax,
                             "dns_insert_failed_delta": after.get("insert_failed", 0) - before.get("insert_failed", 0)})


class MixedTraffic(Scenario):
    name = "mixed-traffic"
    summary = "a bit of everything: TCP/UDP/ICMP, IPv4/IPv6, NAT on loopback, two zones, several states"
    scale_meaning = "(fixed size)"
    default_scale = 1
    explanation = ("A small table with every kind of entry, for checking that tools read all of them alike: "
                   "TCP ESTABLISHED/TIME_WAIT/SYN_SENT, UDP replied and unreplied, ICMP echo, IPv6, DNAT on "
                   "loopback (reply tuple differs), and UDP port 5000 tracked in conntrack zone 7.")

    def build(self, run: LabRun, scale: int) -> None:
        ns = run.netns
        ns.exec("sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")  # per-netns: ICMP echo sockets
        ns.nft("add table ip ctdlab_nat; add chain ip ctdlab_nat out { type nat hook output priority -100; };"
               " add rule ip ctdlab_nat out ip daddr 127.0.0.1 tcp dport 8080 dnat to 127.0.0.1:9090;"
               " add table inet ctdlab_raw; add chain inet ctdlab_raw out { type filter hook output priority raw; };"
               " add rule inet ctdlab_raw out udp dport 5000 ct zone set 7;"
               " add chain inet ctdlab in { type filter hook input priority 0; };"
               " add rule inet ctdlab in tcp dport 9999 tcp flags syn drop")
        run.say("nat: tcp 8080 -> 127.0.0.1:9090; raw: udp dport 5000 in ct zone 7; input: drop SYN to 9999")
        ns.spawn("mixed", 300)
        es = ns.entries()
        run.say(f"{len(es)} entries of mixed traffic, held open")
        run.observed.update({"count": ns.count(), "state_mix": _state_mix(es),
                             "protos": sorted({e.proto for e in es}), "zones": sorted({e.zone or 0 for e in es})})


SCENARIOS = {s.name: s for s in (TableFull(), EarlyDrop(), TimeWaitPileup(), SynUnreplied(), NatLoopback(),
                                 Untracked(), CountMismatch(), GcLag(), K8sNode(), MixedTraffic())}


def catalogue() -> list[dict[str, object]]:
    """``lab list``: every scenario, its default scale, and why this machine cannot run it (or None)."""
    missing = missing_requirements()
    rows: list[dict[str, object]] = []
    for s in SCENARIOS.values():
        why = "; ".join(missing) if missing else s.unavailable()
        rows.append({"name": s.name, "summary": s.summary, "scale": f"{s.default_scale} {s.scale_meaning}",
                     "available": why is None, "why_not": why})
    return rows
