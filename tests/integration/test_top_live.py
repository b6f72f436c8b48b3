"""`top` on the real kernel equals an independent count from `conntrack -L -o extended`."""

import collections
import socket

import pytest

from ctdoctor.listing.entry import iter_entries
from ctdoctor.sources import ctnetlink
from ctdoctor.sources import netns as nsmod
from tests.conftest import NETNS_PREFIX, needs_kernel, run_json

pytestmark = [needs_kernel, pytest.mark.kernel]

KEYS = ["src", "dst", "sport", "dport", "pair", "state", "proto", "zone", "mark", "reply-src", "reply-dst"]


def reference(text: str) -> list[dict]:
    """An independent reading of `conntrack -L -o extended`: tokens, not ctdoctor's parser."""
    out = []
    for ln in text.splitlines():
        if not ln.startswith(("ipv4", "ipv6")):
            continue
        toks = ln.split()
        kv = [t.split("=", 1) for t in toks if "=" in t]
        srcs = [i for i, (k, _) in enumerate(kv) if k == "src"]
        o, r = dict(kv[srcs[0]:srcs[1]]), dict(kv[srcs[1]:])
        state = toks[5] if toks[5].isupper() and "=" not in toks[5] else None
        if state is None:
            state = "UNREPLIED" if "[UNREPLIED]" in toks else "ASSURED" if "[ASSURED]" in toks else "REPLIED"
        d = {"src": o["src"], "dst": o["dst"], "sport": int(o["sport"]) if "sport" in o else None,
             "dport": int(o["dport"]) if "dport" in o else None, "state": state, "proto": toks[2],
             "zone": int(r.get("zone", 0)), "mark": int(r.get("mark", 0)), "reply-src": r["src"],
             "reply-dst": r["dst"]}
        d["pair"] = f"{d['src']}→{d['dst']}" + (f":{d['dport']}" if d["dport"] is not None else "")
        out.append(d)
    return out


def _compare(name: str, extra=()):
    text = nsmod_exec(name, "conntrack", "-L", "-o", "extended")
    ref = reference(text)
    assert len(ref) > 20
    for key in KEYS:
        want = collections.Counter(d[key] for d in ref)
        want_states = collections.defaultdict(collections.Counter)
        for d in ref:
            want_states[d[key]][d["state"]] += 1
        rc, doc = run_json("--netns", name, "top", "--by", key, "--limit", "0", *extra)
        assert rc == 0 and doc["total"] == len(ref), key
        got = {r["key"][key]: r["count"] for r in doc["rows"]}
        assert got == dict(want), key
        for r in doc["rows"]:
            assert r["states"] == dict(want_states[r["key"][key]]), (key, r)


def nsmod_exec(name, *argv):
    import subprocess

    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True).stdout


def test_top_equals_reference_on_mixed_traffic(lab):
    run = lab("mixed-traffic")
    o = run.observed
    assert {"tcp", "udp", "icmp"} <= set(o["protos"]) and o["zones"] == [0, 7]
    _compare(run.netns.name)
    _compare(run.netns.name, extra=("--via", "netlink"))


def test_netlink_decoder_equals_proc_parser(lab):
    run = lab("mixed-traffic")
    ref = next(r for r in nsmod.discover() if r.name == run.netns.name)
    with nsmod.stream_in(ref, "/proc/net/nf_conntrack") as f:
        proc = list(iter_entries(f.read().decode().splitlines()))
    sock = socket.socket(fileno=nsmod.socket_in(ref, socket.AF_NETLINK, socket.SOCK_RAW, 12))
    nl = list(ctnetlink.entries_from(ctnetlink.dump_buffers(sock)))
    sock.close()

    def norm(e):
        # what legitimately differs: the refcount while printing, the timeout ticking, zone=0 printed by /proc only
        e.use = e.timeout = e.id = None
        e.zone = e.zone or 0
        return repr(e)

    assert sorted(map(norm, nl)) == sorted(map(norm, proc))
    assert len(nl) == run.netns.count()


def test_c_netlink_decoder_equals_python_decoder(lab):
    """The C scanner reads a real dump's messages into its tables exactly as the Python decoder
    (decode_entry + entry_fields) does: every key, the filters, the state mix and the counters."""
    from ctdoctor.listing.accel import accelerated
    from ctdoctor.listing.query import parse_query
    from ctdoctor.sources.listing_files import netlink_feeder

    if not accelerated():
        pytest.skip("C accelerator not built")
    run = lab("mixed-traffic")
    ref = next(r for r in nsmod.discover() if r.name == run.netns.name)
    sock = socket.socket(fileno=nsmod.socket_in(ref, socket.AF_NETLINK, socket.SOCK_RAW, 12))
    bufs = [bytes(b) for b in ctnetlink.dump_buffers(sock)]
    sock.close()
    queries = [parse_query(by, *f) for by, f in (
        ("src", (None, None, None, None, None)), ("dst,dport,state", (None, None, None, None, None)),
        ("zone,mark,proto,l3", (None, None, None, None, None)), ("reply-src,reply-dst,sport", (None, None, None, None, None)),
        ("pair", ("ESTABLISHED,UNREPLIED", None, None, None, None)), ("src", (None, "udp", None, None, "127.0.0.0/8")))]
    results = []
    for force in (False, True):
        feeder = netlink_feeder(queries, force_python=force)
        fed = [feeder.feed_netlink(b) for b in bufs]
        results.append((fed, [(a.total, a.matched, a.accounting, a.result()) for a in feeder.aggs]))
    c, py = results
    assert c == py
    assert sum(n for n, _bad, _done in c[0]) == run.netns.count() and c[0][-1][2]


def test_top_netns_all_with_the_netns_key(lab):
    a = lab("syn-unreplied", 30)
    b = lab("time-wait-pileup", 40)
    rc, doc = run_json("--netns", "all", "top", "--by", "netns,state", "--limit", "0")
    assert rc == 0
    got = {(r["key"]["netns"], r["key"]["state"]): r["count"] for r in doc["rows"]}
    assert got[(a.netns.name, "SYN_SENT")] == 30 and got[(b.netns.name, "TIME_WAIT")] == 40
    heads = {h["netns"]: h for h in doc["namespaces"]}
    assert heads[a.netns.name]["count"] == 30 and heads["init"]["netns"] == "init"


def test_the_listing_read_before_the_setup_is_the_chosen_netns_and_counts_the_same(lab):
    """`--netns NAME top` starts reading /proc in that netns before its setup (imports, discovery,
    the counts); it is the table of that netns, counted as the normal path counts it. A netns
    named another way (its inode) takes the normal path; both give the same rows."""
    import argparse

    from ctdoctor.commands import top as topcmd
    from ctdoctor.listing.accel import accelerated
    from ctdoctor.listing.query import parse_query
    from ctdoctor.top import report

    if not accelerated():
        pytest.skip("C accelerator not built")
    run = lab("mixed-traffic")
    name = run.netns.name
    inode = next(r.inode for r in nsmod.discover() if r.name == name)

    def args(netns):
        return argparse.Namespace(file=None, root=None, via="auto", netns=netns, limit=0)

    def early_listing(a):
        return report.early_listing(topcmd.request(a))

    started = early_listing(args(name))
    assert started is not None and started.inode == inode
    started.close()
    assert not started.reader.thread.is_alive()
    assert early_listing(args(str(inode))) is None
    assert early_listing(args("all")) is None
    assert early_listing(argparse.Namespace(file=None, root=None, via="netlink", netns=name, limit=0)) is None
    assert early_listing(args(f"{NETNS_PREFIX}no-such-netns")) is None  # the normal path says what is wrong
    init = early_listing(args(None))  # also where pid 1's netns link cannot be read (a sandbox)
    assert init is not None and init.inode == nsmod.discover()[0].inode
    init.close()

    q = parse_query("src,state", None, None, None, None, None)
    early = topcmd.build_doc(args(name), q, early=True)
    plain = topcmd.build_doc(args(name), q, early=False)
    by_inode = topcmd.build_doc(args(str(inode)), q, early=True)
    assert early["total"] == run.netns.count() > 20
    for doc in (plain, by_inode):
        assert (doc["total"], doc["rows"]) == (early["total"], early["rows"])
        assert doc["netns"] == early["netns"] == name
    host = topcmd.build_doc(args(None), q, early=True)
    assert host["netns"] == "init" and sum(r["count"] for r in host["rows"]) == host["matched"]
