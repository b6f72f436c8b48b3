"""`status` and `collect` against the real kernel, in throwaway network namespaces."""

import re
import tarfile

import pytest

from ctdoctor.listing.entry import iter_entries
from tests.conftest import NETNS_PREFIX, Netns, assert_one_line_error, needs_kernel, run_cli, run_json, sh

pytestmark = [needs_kernel, pytest.mark.kernel]


def _sysctl(key, ns=None):
    return int(sh("sysctl", "-n", key, ns=ns).stdout)


def _conntrack_S_sums(ns=None):
    out = sh("conntrack", "-S", ns=ns).stdout.decode()
    sums = {}
    for ln in out.splitlines():
        for k, v in re.findall(r"(\w+)=(\d+)", ln):
            if k != "cpu":
                sums[k] = sums.get(k, 0) + int(v)
    return sums


def test_live_status_agrees_with_conntrack_and_sysctl():
    with Netns() as ns:
        ns.load_established(300)
        rc, doc = run_json("--netns", ns.name, "status", "--interval", "0.2")
        (st,) = doc["namespaces"]
        assert rc == 0 and st["name"] == ns.name
        assert st["count"] == int(ns.run("conntrack", "-C").stdout) == 300
        assert st["max"] == _sysctl("net.netfilter.nf_conntrack_max")
        assert st["buckets"] == _sysctl("net.netfilter.nf_conntrack_buckets")
        sums = _conntrack_S_sums(ns.name)
        names = {"drop": "drop", "insert_failed": "insert_failed", "early_drop": "early_drop",
                 "invalid": "invalid", "clashres": "clash_resolve", "search_restart": "search_restart"}
        for ours, theirs in names.items():
            assert st["stats"][ours] == sums[theirs], ours
        assert st["rates"] is not None and st["interval"] == 0.2
        assert st["memory"]["bytes"] == 300 * st["memory"]["entry_size"]


def test_filled_netns_shows_its_own_count_under_netns_all():
    with Netns() as a, Netns() as b:
        a.load_established(2000)
        b.load_established(10)
        rc, doc = run_json("--netns", "all", "status", "--interval", "0")
        assert rc == 0
        by = {n["name"]: n for n in doc["namespaces"]}
        assert doc["namespaces"][0]["name"] == "init"
        assert by[a.name]["count"] == 2000 and by[b.name]["count"] == 10
        assert by[a.name]["inode"] != by["init"]["inode"]
        assert by[a.name]["owner"] == "ip netns"


def test_unknown_netns_is_a_one_line_error():
    rc, _out, err = run_cli("--netns", f"{NETNS_PREFIX}does-not-exist", "status")
    assert_one_line_error(rc, err, code=2, contains="no such network namespace")


def _strip(doc):
    """What legitimately differs between live and image: where it was read, and time-dependent rates."""
    doc["host"].pop("source")
    doc["host"].pop("root")
    for ns in doc["namespaces"]:
        ns.pop("sources")
        ns.pop("rates")
        ns.pop("interval")
    doc["kernel_log"].pop("sources")
    return doc


def test_collect_round_trip_equals_live(tmp_path):
    with Netns() as ns:
        ns.load_established(500)
        out = tmp_path / "bundle.tar.gz"
        rc, _, err = run_cli("collect", "-o", str(out))
        assert rc == 0, err
        rc1, live = run_json("--netns", "all", "status", "--interval", "0")
        rc2, image = run_json("--root", str(out), "--netns", "all", "status")
        assert rc1 == rc2 == 0
        assert image["host"]["source"] == "bundle"
        mine = [n for n in image["namespaces"] if n["name"] == ns.name]
        assert mine and mine[0]["count"] == 500 and mine[0]["interval"] is not None
        # a busy host: namespaces come and go between the two reads; compare those both saw
        # (a name may be reused by a new netns meanwhile: the same name and inode is the same netns)
        both = {(n["name"], n["inode"]) for n in live["namespaces"]} & {(n["name"], n["inode"])
                                                                          for n in image["namespaces"]}
        assert {"init", ns.name} <= {name for name, _ in both}
        for doc in (live, image):
            doc["namespaces"] = [n for n in doc["namespaces"] if (n["name"], n["inode"]) in both]
            doc.pop("notes")
            doc.pop("vanished")
            # lines naming a netns inode count only after that netns's birth: with namespaces (and reused
            # inodes) coming and going between the two reads, the tallies may legitimately differ
            doc["kernel_log"].pop("events")
            # another netns's table is read twice, a moment apart: its count, counters and memory may move
            # (traffic, a foreign table full dropping packets); what it is and how it is set up may not.
            # This run's own netns sees nothing but the test: all of it must be equal.
            for n in doc["namespaces"]:
                if n["name"] != ns.name:
                    for moving in ("count", "fill", "stats"):
                        n.pop(moving)
                    n["memory"].pop("bytes")
        assert _strip(image) == _strip(live)
        with tarfile.open(out) as tf:
            names = tf.getnames()
        assert any(n.endswith(f"ctdoctor/netns/{ns.name}/proc/net/nf_conntrack") for n in names)
        assert any(n.endswith(f"sos_commands/networking/namespaces/{ns.name}/ip_netns_exec_{ns.name}_sysctl_-a")
                   for n in names)
        assert any(n.endswith(f"sos_commands/conntrack/ip_netns_exec_{ns.name}_conntrack_-S") for n in names)


def test_collect_no_entries_and_anonymize(tmp_path):
    with Netns() as ns:
        ns.load_established(50, src="127.0.0.1", dst="127.0.0.2")
        ns.run("conntrack", "-I", "-s", "192.0.2.7", "-d", "198.51.100.9", "-p", "tcp", "--sport", "1000",
               "--dport", "443", "--state", "ESTABLISHED", "-t", "300", "-u", "SEEN_REPLY,ASSURED")
        ns.run("conntrack", "-I", "-s", "192.0.2.7", "-d", "198.51.100.10", "-p", "tcp", "--sport", "1001",
               "--dport", "443", "--state", "ESTABLISHED", "-t", "300", "-u", "SEEN_REPLY,ASSURED")
        anon = tmp_path / "anon.tar.gz"
        rc, _, err = run_cli("collect", "-o", str(anon), "--anonymize")
        assert rc == 0, err
        with tarfile.open(anon) as tf:
            member = next(m for m in tf.getnames() if m.endswith(f"netns/{ns.name}/proc/net/nf_conntrack"))
            text = tf.extractfile(member).read().decode()
        assert "192.0.2.7" not in text and "198.51.100.9" not in text
        es = list(iter_entries(text.splitlines()))
        ours = [e for e in es if e.orig.dport == 443]
        assert len(ours) == 2
        assert ours[0].orig.src == ours[1].orig.src, "the same address maps to the same address"
        assert ours[0].orig.dst != ours[1].orig.dst
        assert all(e.reply.dst == e.orig.src for e in ours), "mapping is consistent across tuples"
        assert sum(1 for e in es if e.orig.src == "127.0.0.1") == 50, "loopback is kept"
        bare = tmp_path / "bare.tar.gz"
        rc, _, err = run_cli("collect", "-o", str(bare), "--no-entries")
        assert rc == 0, err
        with tarfile.open(bare) as tf:
            assert not [m for m in tf.getnames() if m.endswith("proc/net/nf_conntrack")]
        rc, doc = run_json("--root", str(bare), "--netns", ns.name, "status")
        assert doc["namespaces"][0]["count"] == 52


def test_collect_bad_output(tmp_path):
    rc, _out, err = run_cli("collect", "-o", str(tmp_path / "x.zip"))
    assert_one_line_error(rc, err, code=2, contains=".tar.gz")
    rc, _out, err = run_cli("collect", "-o", str(tmp_path / "nodir" / "x.tar.gz"))
    assert_one_line_error(rc, err, code=2, contains="does not exist")
    rc, _out, err = run_cli("--root", str(tmp_path), "collect", "-o", str(tmp_path / "x.tar.gz"))
    assert_one_line_error(rc, err, code=2, contains="running kernel")
    assert not list(tmp_path.glob("*.tar.gz")) and not list(tmp_path.glob(".ctdoctor-bundle-*"))
