"""top's two aggregators (C and pure Python) give identical results; keys, filters, rows."""

import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.entry import format_entry
from ctdoctor.listing.query import parse_query
from ctdoctor.listing.rows import rows
from ctdoctor.sources.listing_files import tally_file, tally_stream
from tests.conftest import DATA, IMAGES, assert_one_line_error, run_cli, run_json
from tests.unit.test_entries_property import entries as entry_strategy

needs_accel = pytest.mark.skipif(not accelerated(), reason="C accelerator not built")

ALL_KEYS = ["src", "dst", "sport", "dport", "pair", "state", "proto", "zone", "mark", "reply-src", "reply-dst", "l3"]
FILTERS = [
    {}, {"state": "ESTABLISHED"}, {"state": "UNREPLIED,TIME_WAIT"}, {"proto": "udp,icmp"}, {"port": 53},
    {"src": "10.0.0.0/8"}, {"dst": "192.0.2.0/25,2001:db8::/32"}, {"state": "ASSURED", "proto": "tcp"},
]


@pytest.fixture(scope="module")
def listing(tmp_path_factory):
    p = tmp_path_factory.mktemp("top") / "l.txt"
    # 8,000 generated entries cover every key and filter: more only took longer (C and Python compared)
    subprocess.run([sys.executable, "bench/gen_listing.py", "8000", str(p), "--seed", "7"], check=True)
    text = p.read_bytes()
    extra = b"".join((DATA / n).read_bytes() for n in
                     ("proc_nf_conntrack_6.18", "proc_nf_conntrack_variants", "proc_nf_conntrack_acct_6.18",
                      "conntrack_L_extended_6.18", "conntrack_L_6.18", "proc_nf_conntrack_gre_old"))
    p.write_bytes(text + extra)
    return p


def both(data: bytes, by: str, **f):
    q = parse_query(by, f.get("state"), f.get("proto"), f.get("port"), f.get("src"), f.get("dst"))
    out = []
    for force in (False, True):
        agg = q.aggregator(force_python=force)
        _lines, bad, _ = agg.feed(data, False)
        assert bad == 0
        out.append((agg.total, agg.matched, dict(agg.result()), agg.top(0)))
    return out


@needs_accel
@pytest.mark.parametrize("by", [*ALL_KEYS, "src,state", "dst,dport,proto"])
def test_c_and_python_agree_on_every_key(listing, by):
    c, py = both(listing.read_bytes(), by)
    assert c == py


@needs_accel
@pytest.mark.parametrize("f", FILTERS, ids=str)
def test_c_and_python_agree_with_filters(listing, f):
    c, py = both(listing.read_bytes(), "src,dport", **f)
    assert c == py
    assert c[1] < c[0] or not f


@needs_accel
@settings(max_examples=150, deadline=None)
@given(st.lists(entry_strategy(), min_size=1, max_size=30), st.sampled_from(ALL_KEYS))
def test_c_and_python_agree_on_generated_entries(es, by):
    for e in es:  # sums are 64-bit in C, as the kernel's counters are
        for t in (e.orig, e.reply):
            if t.packets is not None:
                t.packets, t.bytes = t.packets >> 16, t.bytes >> 16
    data = ("\n".join(format_entry(e, random.choice(["proc", "extended", "default"])) for e in es) + "\n").encode()
    c, py = both(data, by)
    assert c == py


@needs_accel
def test_bad_lines_are_found_by_both():
    data = (DATA / "proc_nf_conntrack_6.18").read_bytes() + b"ipv4 2 tcp 6 1 ESTABLISHED src=1.2.3.4\n"
    for force in (False, True):
        agg = parse_query("src", None, None, None, None, None).aggregator(force_python=force)
        assert agg.feed(data, False) == (7, 1, 7)  # 7 lines, 1 unreadable, the 7th


def test_top_counts_from_a_real_listing():
    rc, doc = run_json("top", "--file", str(DATA / "proc_nf_conntrack_6.18"), "--by", "dport,proto", "--limit", "0")
    assert rc == 0 and doc["total"] == 6
    rows = {(r["key"]["dport"], r["key"]["proto"]): r for r in doc["rows"]}
    assert rows[(8080, "tcp")]["count"] == 2 and rows[(8081, "tcp")]["count"] == 1
    assert rows[(8080, "tcp")]["states"] == {"ESTABLISHED": 1, "TIME_WAIT": 1}
    assert rows[(5353, "udp")]["states"] == {"UNREPLIED": 2}
    assert rows[(None, "icmp")]["count"] == 1
    assert abs(sum(r["share"] for r in doc["rows"]) - 1) < 1e-6
    assert doc["rows"] == sorted(doc["rows"], key=lambda r: -r["count"])


def test_ipv6_compressed_and_pair_key():
    rc, doc = run_json("top", "--file", str(DATA / "proc_nf_conntrack_6.18"), "--by", "pair", "--limit", "0")
    assert rc == 0
    pairs = {r["key"]["pair"] for r in doc["rows"]}
    assert "::1→::1:8081" in pairs and "127.0.0.1→127.0.0.1:8080" in pairs and "127.0.0.1→127.0.0.1" in pairs


def test_reply_keys_show_the_nat_backend():
    rc, doc = run_json("top", "--file", str(DATA / "proc_nf_conntrack_variants"), "--by", "reply-src",
                       "--port", "443", "--limit", "0")
    assert rc == 0
    assert {r["key"]["reply-src"] for r in doc["rows"]} == {"198.51.100.7", "10.244.0.5"}
    assert doc["matched"] == 2 and doc["total"] == 9


def test_accounting_columns():
    rc, doc = run_json("top", "--file", str(DATA / "proc_nf_conntrack_acct_6.18"), "--by", "dport")
    assert rc == 0
    assert doc["accounting"] and doc["rows"][0]["packets"] == 5 and doc["rows"][0]["bytes"] == 776


def test_zone_and_mark_keys():
    rc, doc = run_json("top", "--file", str(DATA / "proc_nf_conntrack_variants"), "--by", "zone,mark", "--limit", "0")
    assert rc == 0
    keys = {(r["key"]["zone"], r["key"]["mark"]): r["count"] for r in doc["rows"]}
    # zone-orig=5 (conntrack-tools prints it when the zones differ per direction) is the zone, not 0
    assert keys[(3, 0)] == 1 and keys[(5, 16)] == 1 and keys[(0, 0)] == 7


def test_stdin_gzip_and_csv(tmp_path):
    import gzip

    raw = (DATA / "conntrack_L_6.18").read_bytes()
    rc, out, _err = run_cli("top", "--file", "-", "--by", "state", "--format", "csv", input=raw)
    assert rc == 0
    lines = out.strip().splitlines()
    assert lines[0] == "state,count,share,states" and lines[1].startswith("ESTABLISHED,2,")
    gz = tmp_path / "l.gz"
    gz.write_bytes(gzip.compress(raw))
    rc, doc = run_json("top", "--file", str(gz), "--by", "state")
    assert doc["total"] == 6


def test_save_format_listing():
    rc, doc = run_json("top", "--file", str(DATA / "conntrack_L_save_6.18"), "--by", "proto", "--limit", "0")
    assert rc == 0 and {r["key"]["proto"]: r["count"] for r in doc["rows"]} == {"tcp": 3, "udp": 2, "icmp": 1}


def test_big_file_split_across_threads_equals_one_stream(listing, tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(listing.read_bytes() * 6)  # over the split threshold
    q = parse_query("src,state", None, None, None, None, None)
    a = tally_file(str(big), q, workers=3)
    with open(big, "rb") as f:
        b = tally_stream(f, q)
    assert a.total == b.total and rows(a, q, None) == rows(b, q, None)


@pytest.mark.parametrize("content,line", [
    (b"\x00\x01\x02\x03garbage" * 50, 1),
    (b"ipv4     2 tcp      6 431999 ESTABLISHED src=127.0\n" * 3 + (DATA / "proc_nf_conntrack_6.18").read_bytes()[:300], 1),
    ((DATA / "proc_stat_nf_conntrack_6.18").read_bytes(), 1),
])
def test_bad_file_input_names_the_line(tmp_path, content, line):
    p = tmp_path / "bad"
    p.write_bytes(content)
    rc, _out, err = run_cli("top", "--file", str(p))
    assert_one_line_error(rc, err, code=2, contains=f"line {line}")


def test_one_bad_line_in_a_big_file_is_counted_not_fatal(tmp_path, listing):
    good = listing.read_bytes() * 5
    p = tmp_path / "bad"
    p.write_bytes(good + b"tcp 6 1 ESTABLISHED src=1.2.3.4 dst=5.6.7.8\n" + good)
    n = good.count(b"\n") + 1
    rc, doc = run_json("top", "--file", str(p))
    assert rc == 0 and doc["unreadable"] == 1 and doc["total"] == 2 * good.count(b"\n")
    assert doc["first_unreadable"]["line"] == n  # the global line number, across the split ranges
    rc, _out, err = run_cli("top", "--file", str(p))
    assert rc == 0 and "1 line" in err and f"line {n}" in err


def test_mostly_junk_big_file_is_rejected_with_the_global_line(tmp_path, listing):
    good = listing.read_bytes()
    junk = b"Nov 25 10:00:01 gw kernel: something else entirely\n" * (good.count(b"\n") * 3)
    p = tmp_path / "junk"
    p.write_bytes(good + junk)
    rc, _out, err = run_cli("top", "--file", str(p))
    first_junk = good.count(b"\n") + 1
    assert_one_line_error(rc, err, code=2, contains=f"line {first_junk}:")


@pytest.mark.parametrize("args,msg", [
    (["--by", "nope"], "no --by key 'nope'"), (["--src", "10.0.0.300/8"], "not an address"),
    (["--port", "70000"], "--port"), (["--limit", "-1"], "--limit"), (["--file", "/nonexistent"], "no such file"),
    (["--file", "/tmp", "--by", "src"], "directory"),
])
def test_bad_usage(args, msg):
    rc, _out, err = run_cli("top", *args)
    assert_one_line_error(rc, err, code=2, contains=msg)


def test_top_on_a_sosreport_with_noise_and_a_cut_listing():
    k8s = IMAGES / "sosreport-node7-k8s"
    rc, doc = run_json("--root", str(k8s), "top", "--by", "dport", "--netns", "all", "--limit", "0")
    assert rc == 0
    by_ns = {h["netns"]: h for h in doc["namespaces"]}
    assert by_ns["init"]["listed"] == 3 and by_ns["init"]["count"] == 1843
    assert by_ns["cni-4f1e"]["listed"] == 2 and by_ns["cni-4f1e"]["sample"] is True
    assert by_ns["cni-4f1e"]["count"] == 131072


def test_netns_key_over_an_image():
    k8s = IMAGES / "sosreport-node7-k8s"
    rc, doc = run_json("--root", str(k8s), "top", "--by", "netns,state", "--netns", "all", "--limit", "0")
    assert rc == 0
    got = {(r["key"]["netns"], r["key"]["state"]): r["count"] for r in doc["rows"]}
    assert got == {("init", "ESTABLISHED"): 1, ("init", "REPLIED"): 1, ("init", "TIME_WAIT"): 1,
                   ("cni-4f1e", "ESTABLISHED"): 2}


def test_entries_fed_directly_group_like_their_printed_lines():
    """The pure-Python ctnetlink path feeds decoded entries to the aggregator without printing and
    re-scanning them: same groups, states and counters as the scanned text."""
    from pathlib import Path

    from ctdoctor.listing.entry import entry_fields, parse_line

    data = Path(__file__).parent.parent / "data"
    entries = [parse_line(ln) for name in ("conntrack_L_extended_6.18", "proc_nf_conntrack_acct_6.18", "proc_nf_conntrack_6.18")
               for ln in (data / name).read_text().splitlines() if ln.strip()]
    assert len(entries) >= 7
    for by in ("src", "dport,proto", "state", "zone,mark", "reply-src,l3"):
        q = parse_query(by, None, None, None, None, None)
        direct, scanned = q.aggregator(force_python=True), q.aggregator(force_python=True)
        for e in entries:
            direct.take(entry_fields(e), 1)
        scanned.feed("".join(format_entry(e, "extended") + "\n" for e in entries).encode())
        assert direct.result() == scanned.result(), by
        assert (direct.total, direct.matched) == (scanned.total, scanned.matched)
