"""flush and notrack on the real kernel, in lab namespaces; recover and apply dry runs on this host."""

import json
import subprocess
import sys

import pytest

from ctdoctor.listing.accel import accelerated
from tests.conftest import assert_one_line_error, needs_kernel, run_cli

pytestmark = [needs_kernel, pytest.mark.kernel]


def _states(ns):
    rc, out, err = run_cli("--netns", ns, "top", "--by", "state", "--limit", "0", "--format", "json")
    assert rc == 0, err
    return {r["key"]["state"]: r["count"] for r in json.loads(out)["rows"]}


def test_flush_keeps_established_and_dry_run_matches(lab):
    run = lab("mixed-traffic")
    ns = run.netns.name
    before = _states(ns)
    assert before.get("ESTABLISHED", 0) >= 8 and before.get("TIME_WAIT", 0) >= 4
    rc, out, err = run_cli("--netns", ns, "flush", "--state", "TIME_WAIT,UNREPLIED", "--dry-run", "--format", "json")
    dry = json.loads(out)
    assert dry["deleted"] == 0 and dry["after"] == dry["before"]
    rc, out, err = run_cli("--netns", ns, "flush", "--state", "TIME_WAIT,UNREPLIED", "--format", "json")
    assert rc == 0, err
    done = json.loads(out)
    assert done["matched"] == dry["matched"] and done["deleted"] + done["already_gone"] == dry["matched"]
    after = _states(ns)
    # the lab's half-open clients retransmit their SYNs, which can make new SYN_SENT entries meanwhile
    assert "TIME_WAIT" not in after and "UNREPLIED" not in after
    assert after["ESTABLISHED"] == before["ESTABLISHED"], "ESTABLISHED entries survive"
    assert done["after"] == done["before"] - done["deleted"]


def test_flush_refuses_established_without_the_flag(lab):
    run = lab("nat-loopback", 5)
    rc, out, err = run_cli("--netns", run.netns.name, "flush", "--state", "ESTABLISHED")
    assert_one_line_error(rc, err, code=2, contains="--include-established")
    rc, out, err = run_cli("--netns", run.netns.name, "flush", "--state", "ALL", "--format", "json")
    doc = json.loads(out)
    assert doc["protected_established"] == 5 and doc["deleted"] == 0
    rc, out, err = run_cli("--netns", run.netns.name, "flush", "--state", "ESTABLISHED", "--include-established",
                           "--port", "8080", "--format", "json")
    assert json.loads(out)["deleted"] == 5


def test_notrack_port_creates_no_entries_and_connects_with_the_emitted_accept(netns):
    netns.run("nft", "add table inet filter; add chain inet filter input { type filter hook input priority 0; "
                     "policy drop; }; add rule inet filter input ct state established,related accept;"
                     "add rule inet filter input ip saddr 127.0.0.9 drop")
    # --apply alone never edits the user's chain: it says where the accept belongs
    rc, out, err = run_cli("--netns", netns.name, "notrack", "--port", "7070", "--proto", "tcp",
                           "--direction", "both", "--apply")
    assert rc == 0, err
    assert "your chain inet filter input" in out and "nft add rule inet filter input position" in out
    assert "ctdoctor-notrack" not in netns.run("nft", "list", "chain", "inet", "filter", "input").stdout.decode()
    rc, out, err = run_cli("--netns", netns.name, "notrack", "--port", "7070", "--proto", "tcp",
                           "--direction", "both", "--apply", "--accept-in", "inet:filter:input")
    assert rc == 0, err
    chain = netns.run("nft", "list", "chain", "inet", "filter", "input").stdout.decode()
    assert chain.index("127.0.0.9 drop") < chain.index("untracked accept"), "the user's drop stays above"
    helper = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-m", "ctdoctor.lab.traffic",
                               "connect-many", "7070", "5", "20", "7070"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        got = json.loads(helper.stdout.readline())
        assert got["ok"] == 5, "sockets connect: the emitted accept rule lets untracked packets in"
        listing = netns.run("cat", "/proc/net/nf_conntrack").stdout.decode()
        assert "7070" not in listing and netns.count() == 0, "no conntrack entries for the untracked port"
        ss = netns.run("ss", "-tanH", "state", "established").stdout.decode()
        assert ss.count(":7070") == 10
    finally:
        helper.stdin.close()
        helper.wait(timeout=10)
    rc, out, err = run_cli("--netns", netns.name, "notrack", "--remove")
    assert rc == 0 and "removed table inet ctdoctor_notrack" in out
    ruleset = netns.run("nft", "list", "ruleset").stdout.decode()
    assert "ctdoctor" not in ruleset and "ct state established,related accept" in ruleset


def test_notrack_without_proto_untracks_tcp_and_udp_and_says_so(netns):
    # both directions: on loopback a packet to the port leaves through output before it arrives
    rc, out, err = run_cli("--netns", netns.name, "notrack", "--port", "7072", "--direction", "both", "--apply")
    assert rc == 0 and "--proto not given: untracking tcp and udp" in err, err
    table = netns.run("nft", "list", "table", "inet", "ctdoctor_notrack").stdout.decode()
    assert "meta l4proto { tcp, udp } th dport 7072 notrack" in table
    # both really go untracked: a UDP datagram and a TCP attempt to the port leave no entry
    netns.run(sys.executable, "-c", "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                    "s.sendto(b'x', ('127.0.0.1', 7072))\nt=socket.socket()\nt.settimeout(0.5)\n"
                                    "t.connect_ex(('127.0.0.1', 7072))")
    assert "7072" not in netns.run("cat", "/proc/net/nf_conntrack").stdout.decode()
    netns.run(sys.executable, "-c", "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                    "s.sendto(b'x', ('127.0.0.1', 7073))")
    assert "dport=7073" in netns.run("cat", "/proc/net/nf_conntrack").stdout.decode()  # another port: tracked
    rc, out, err = run_cli("--netns", netns.name, "notrack", "--port", "123")
    assert rc == 0 and "untracking udp (port 123: udp)" in err and "udp dport 123 notrack" in out


def test_without_the_accept_the_untracked_port_is_dropped(netns):
    netns.run("nft", "add table inet filter; add chain inet filter input { type filter hook input priority 0; "
                     "policy drop; }; add rule inet filter input ct state established,related accept;"
                     "add table inet raw; add chain inet raw out { type filter hook output priority raw; };"
                     "add rule inet raw out tcp dport 7071 notrack; add rule inet raw out tcp sport 7071 notrack")
    helper = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-m", "ctdoctor.lab.traffic",
                               "connect-many", "7071", "1", "5", "7071"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(helper.stdout.readline())["ok"] == 0
    finally:
        helper.stdin.close()
        helper.wait(timeout=15)


def test_recover_on_this_built_in_kernel_verifies():
    rc, out, err = run_cli("recover")
    assert rc == 0, out + err
    assert "nothing to load" in out and "verified: a loopback connection in a test netns became 1 conntrack" in out


def test_apply_dry_run_on_this_host_writes_nothing():
    import os

    before = os.path.exists("/etc/sysctl.d/90-ctdoctor.conf")
    rc, out, _err = run_cli("apply", "--max", "524288")
    assert rc == 0 and "dry run" in out and "+net.netfilter.nf_conntrack_max = 524288" in out
    assert os.path.exists("/etc/sysctl.d/90-ctdoctor.conf") == before
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        assert f.read().strip() != "524288"


def test_flush_never_deletes_an_entry_recreated_with_the_same_tuple(netns):
    """The race: dump, then the entry is replaced by a new one with the same tuple, then delete.
    The delete names the old entry's id, so the kernel keeps the new one."""
    import socket as so

    from ctdoctor.sources import ctnetlink
    from ctdoctor.sources import netns as nsmod

    tup = ["-p", "tcp", "-s", "127.0.0.1", "-d", "127.0.0.1", "--sport", "40000", "--dport", "8080"]
    netns.run("conntrack", "-I", *tup, "--state", "TIME_WAIT", "-t", "100", "-u", "SEEN_REPLY,ASSURED")
    (ref,) = nsmod.select(nsmod.discover(), netns.name)

    def sock():
        return so.socket(fileno=nsmod.socket_in(ref, so.AF_NETLINK, so.SOCK_RAW, ctnetlink.NETLINK_NETFILTER))

    s = sock()
    old_dump = list(ctnetlink.dump_buffers(s))
    s.close()
    old = [e for e in ctnetlink.entries_from(iter(old_dump)) if e.orig.sport == 40000]
    assert len(old) == 1 and old[0].id is not None
    requests = b""  # flush's C path: CT_DELETE requests built from the same dump's attributes
    if accelerated():
        from ctdoctor.listing._fastscan import netlink_select
        from ctdoctor.listing.query import parse_query

        agg = parse_query("state", None, None, 40000, None, None).aggregator()
        for buf in old_dump:
            requests += netlink_select(agg, buf, False, 1)[5]
        assert requests
    # a new connection with the same tuple takes its place between the dump and the delete.
    # The id hashes the object's address and tuple: when the new entry lands in the freed slab
    # object it gets the same id and no one can tell the two apart, so the test re-creates it (with
    # fillers holding the freed objects, as the kernel's other traffic would) until the ids differ.
    filler_port = 41000
    for _attempt in range(50):
        netns.run("conntrack", "-D", *tup)
        netns.run("conntrack", "-I", "-p", "tcp", "-s", "127.0.0.1", "-d", "127.0.0.1", "--sport", str(filler_port),
                  "--dport", "8081", "--state", "TIME_WAIT", "-t", "100", "-u", "SEEN_REPLY,ASSURED")
        filler_port += 1
        netns.run("conntrack", "-I", *tup, "--state", "ESTABLISHED", "-t", "300", "-u", "SEEN_REPLY,ASSURED")
        s = sock()
        new = [e for e in ctnetlink.entries_from(ctnetlink.dump_buffers(s)) if e.orig.sport == 40000]
        s.close()
        assert len(new) == 1
        if new[0].id != old[0].id:
            break
    else:
        pytest.fail("the kernel gave every re-created entry the old id")
    s = sock()
    try:
        deleted, gone = ctnetlink.delete_entries(s, old)
    finally:
        s.close()
    assert (deleted, gone) == (0, 1)
    if requests:
        s = sock()
        try:
            assert ctnetlink.send_deletes(s, requests) == (0, 1)  # its CTA_ID names the old entry too
        finally:
            s.close()
    listing = netns.run("conntrack", "-L").stdout.decode()
    assert "ESTABLISHED" in listing and "sport=40000" in listing


def test_on_a_full_netns_the_doctor_plan_and_apply_name_one_max(lab, tmp_path):
    """The lab's table-full incident, live: the doctor's fix, plan's pick and the diff apply --from-plan
    shows (not written: this host's settings stay as they are) carry the same nf_conntrack_max."""
    import re

    run = lab("table-full")
    # this run's full netns by name: another session's full lab netns (a busy host) has its own pick
    rc, out, err = run_cli("--netns", run.netns.name, "--format", "json", timeout=120)
    doc = json.loads(out)
    named = {int(m.group(1)) for f in doc["findings"] if f["id"] in ("CT001", "CT018") and f["netns"] == run.netns.name
             for line in f["fix"] for m in re.finditer(r"(?:nf_conntrack_max=|--max )(\d+)", line)}
    rc, out, err = run_cli("--netns", run.netns.name, "plan", "--format", "json", timeout=120)
    assert rc == 0, err
    plan = json.loads(out)
    peak = next(c for c in plan["candidates"] if c["rule"] == "observed peak")
    assert peak["lower_bound"] is True  # a table at its max: demand unknown above
    assert named == {plan["pick"]["max"]}, (named, plan["pick"])
    saved = tmp_path / "plan.json"
    saved.write_text(out)
    rc, out, err = run_cli("apply", "--from-plan", str(saved), timeout=120)
    assert rc == 0, err
    assert f"net.netfilter.nf_conntrack_max = {plan['pick']['max']}" in out
