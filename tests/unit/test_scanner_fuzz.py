"""The C scanner and its pure-Python twin agree on every input, valid or not, and the C one
never crashes: fuzzed real lines (flipped bytes, cut lines, long tokens, junk), and one build
of the extension under AddressSanitizer fed the same corpus, mutated ctnetlink messages and
every entry point (feed, feed_many, merge with a long prefix, top, netlink_feed, scan_fields).

Hypothesis runs derandomised in CI (tests/conftest.py selects the "ci" profile), so a failure
there is reproducible; locally every run draws new examples.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctdoctor.listing import query as topmod  # its folder holds the C sources (fastscan/)
from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.query import parse_query
from tests.conftest import DATA, run_cli, run_json

needs_accel = pytest.mark.skipif(not accelerated(), reason="C accelerator not built")

LISTINGS = ("proc_nf_conntrack_6.18", "proc_nf_conntrack_variants", "proc_nf_conntrack_acct_6.18",
            "conntrack_L_extended_6.18", "conntrack_L_6.18", "proc_nf_conntrack_gre_old",
            "conntrack_L_extended_id_6.18", "conntrack_L_ktimestamp_6.18",
            "conntrack_L_extended_id_ktimestamp_6.18", "proc_nf_conntrack_keenetic")
REAL_LINES = [ln for n in LISTINGS for ln in (DATA / n).read_bytes().splitlines() if ln.strip()]
KEYSETS = ["src", "dst,dport", "state,proto", "zone,mark", "reply-src,reply-dst,l3", "sport,pair"]
FILTERS = [{}, {"state": "ESTABLISHED,UNREPLIED"}, {"proto": "tcp"}, {"port": 443}, {"src": "127.0.0.0/8,::1/128"},
           {"dst": "203.0.113.0/24"}]
JUNK = [b"src=", b"dst=", b"sport=99999", b"packets=18446744073709551616", b"bytes=18446744073709551615",
        b"[", b"]", b"[ASSURED]", b"[UNREPLIED]", b"zone=65536", b"mark=4294967296", b"\x00", b"\xff\xfe",
        b"=", b"==", b"src=::ffff:1.2.3.4", b"dst=1.2.3.04", b"use=", b"ipv4", b"2", b"  ", b"\t", b"\r",
        b"src=" + b"1" * 5000, b"dst=" + b"a:" * 3000, b"x" * 5000, b"zone-orig=5", b"[start=Tue Apr  6 10:11:12"]


def both(data: bytes, by: str = "src", **f):
    q = parse_query(by, f.get("state"), f.get("proto"), f.get("port"), f.get("src"), f.get("dst"))
    out = []
    for force in (False, True):
        agg = q.aggregator(force_python=force)
        fed = agg.feed(data, False)
        out.append((fed, agg.total, agg.matched, dict(agg.result()), agg.top(0)))
    return out


def mutate(rng: random.Random, line: bytes) -> bytes:
    b = bytearray(line)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and b:  # flip a byte
            i = rng.randrange(len(b))
            b[i] = rng.randrange(256) if rng.random() < 0.5 else b[i] ^ (1 << rng.randrange(8))
        elif op == 1 and b:  # cut the line
            b = b[: rng.randrange(len(b))]
        elif op == 2:  # insert a junk token at a token boundary
            spaces = [i for i, c in enumerate(b) if c == 0x20] or [len(b)]
            i = rng.choice(spaces)
            b[i:i] = b" " + rng.choice(JUNK)
        elif op == 3 and b:  # duplicate a slice
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randrange(1, 60))
            b[i:i] = b[i:j]
        elif op == 4:  # a number grows huge
            toks = bytes(b).split(b" ")
            k = rng.randrange(len(toks))
            if b"=" in toks[k]:
                key = toks[k].split(b"=")[0]
                toks[k] = key + b"=" + b"9" * rng.choice([5, 6, 10, 11, 20, 21, 400])
            b = bytearray(b" ".join(toks))
        elif op == 5:  # delete a token
            toks = bytes(b).split(b" ")
            del toks[rng.randrange(len(toks))]
            b = bytearray(b" ".join(toks))
        else:  # swap two tokens
            toks = bytes(b).split(b" ")
            i, j = rng.randrange(len(toks)), rng.randrange(len(toks))
            toks[i], toks[j] = toks[j], toks[i]
            b = bytearray(b" ".join(toks))
    return bytes(b).replace(b"\n", b" ")


def corpus(seed: int, n: int = 3000) -> bytes:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ln = rng.choice(REAL_LINES)
        out.append(mutate(rng, ln) if rng.random() < 0.8 else ln)
    return b"\n".join(out) + b"\n"


@needs_accel
def test_one_long_token_does_not_crash_and_is_one_unreadable_line(tmp_path):
    """The SIGSEGV of issue 9: `src=` and 5000 characters."""
    good = (DATA / "proc_nf_conntrack_6.18").read_bytes()
    p = tmp_path / "long"
    p.write_bytes(good + b"ipv4 2 tcp 6 1 ESTABLISHED src=" + b"1" * 5000 + b" dst=1.2.3.4 sport=1 dport=2 "
                  b"src=1.2.3.4 dst=1.1.1.1 sport=2 dport=1\n")
    for env in ({}, {"CTDOCTOR_NO_ACCEL": "1"}):
        rc, doc = run_json("top", "--file", str(p), env=env)
        assert rc == 0 and doc["total"] == 6 and doc["unreadable"] == 1
        assert doc["first_unreadable"]["line"] == 7


@needs_accel
@pytest.mark.parametrize("seed", range(4))
def test_c_and_python_agree_on_mutated_real_lines(seed):
    data = corpus(seed)
    for by, f in zip(KEYSETS, FILTERS, strict=True):
        c, py = both(data, by, **f)
        assert c == py, f"by={by} filters={f} seed={seed}"
    # the corpus really mixes readable and unreadable lines
    fed = both(data)[0][0]
    assert 0 < fed[1] < fed[0]


@needs_accel
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(REAL_LINES), st.integers(0, 2**32)), min_size=1, max_size=20),
       st.sampled_from(KEYSETS))
def test_c_and_python_agree_on_hypothesis_mutations(items, by):
    data = b"\n".join(mutate(random.Random(s), ln) for ln, s in items) + b"\n"
    c, py = both(data, by)
    assert c == py


@needs_accel
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_c_and_python_agree_on_raw_bytes(blob):
    c, py = both(blob, "src,dport,state")
    assert c == py


@needs_accel
def test_counters_saturate_in_both_instead_of_wrapping():
    line = (b"ipv4 2 tcp 6 10 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 packets=18446744073709551615 "
            b"bytes=18446744073709551615 src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 packets=1 bytes=1 [ASSURED] "
            b"mark=0 use=1\n")
    c, py = both(line * 3, "src")
    assert c == py
    (_, cnt, opk, ob, rpk, rb, _), = c[4][1]
    assert cnt == 3 and opk == ob == 2**64 - 1 and rpk == rb == 3


def _asan_runtime() -> str | None:
    cc = shutil.which("gcc")
    if cc is None:
        return None
    lib = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return lib if lib and os.path.isabs(lib) and os.path.exists(lib) else None


@needs_accel
@pytest.mark.skipif(_asan_runtime() is None, reason="gcc with libasan not available")
def test_scanner_under_address_sanitizer(tmp_path):
    """Build _fastscan (every file) with -fsanitize=address and feed it the fuzz corpus and long tokens,
    flush's selection of mutated dumps, and four threads on one table (the busy guard refuses the others)."""
    srcs = sorted(str(p) for p in (Path(topmod.__file__).parent / "fastscan").glob("*.c"))
    assert len(srcs) > 1  # every file of the split extension, as setup.py builds it
    inc = sysconfig.get_paths()["include"]
    out = tmp_path / ("_fastscan" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer",
                    f"-I{inc}", *srcs, "-o", str(out)], check=True, capture_output=True)
    corpus_file = tmp_path / "corpus"
    corpus_file.write_bytes(corpus(11, 4000) + b"src=" + b"9" * 100000 + b"\n" + b"[" * 70000 + b"\n")
    from ctdoctor.listing.entry import Entry, Tuple
    from tests.unit.test_fastpaths import DONE, encode  # here: that module imports this one

    nl = b"".join(encode(e) for e in (
        Entry("ipv4", "udp", 17, 30, None, Tuple("10.0.0.1", "10.0.0.2", 5, 53), Tuple("10.0.0.2", "10.0.0.1", 53, 5),
              unreplied=True, mark=3, use=1, secctx="system_u:object_r:x:s0", zone=4),
        Entry("ipv6", "tcp", 6, 30, "SYN_SENT", Tuple("::1", "::2", 5, 80, packets=1, bytes=60),
              Tuple("::2", "::1", 80, 5, packets=0, bytes=0), unreplied=True, mark=0, use=1))) + DONE
    (tmp_path / "netlink").write_bytes(nl)
    script = f"""
import importlib.util, random, sys
spec = importlib.util.spec_from_file_location("_fastscan", {str(out)!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
data = open({str(corpus_file)!r}, "rb").read()
nl = open({str(tmp_path / "netlink")!r}, "rb").read()
for fields in [(0,), (1, 3), (4, 5), (6, 7), (8, 9, 10), (2, 0, 1, 3)]:
    a = m.Aggregator(fields, None, None, -1, None, None)
    for i in range(0, len(data), 65536):
        a.feed(memoryview(data)[i:i + 65536])
    b = m.Aggregator(fields, (b"ESTABLISHED",), (b"tcp",), 443, ((4, bytes(4), 0),), None)
    b.feed(data); b.merge(a, b"pre" * 50); b.top(3); a.top(0); a.top(1); a.result()
    c = m.Aggregator(fields, None, None, -1, None, ((6, bytes(16), 8),))
    m.feed_many((a, b, c), data, True)
    rng = random.Random(len(fields))
    for _ in range(2000):
        x = bytearray(nl)
        for _ in range(rng.randint(0, 5)):
            x[rng.randrange(len(x))] = rng.randrange(256)
        x = bytes(x[:rng.randrange(len(x) + 1)])
        try:
            m.netlink_feed((a, c), x); m.netlink_done(x)
        except OSError:
            pass
        try:
            m.netlink_select(c, x, True, 1, 3)
        except OSError:
            pass
for ln in data.split(b"\\n")[:3000]:
    for how in (0, 1, 2):
        m.scan_fields(ln, how)
import threading
t = m.Aggregator((0, 1), None, None, -1, None, None)
refused = []
def feed():
    try:
        t.feed(data)
    except RuntimeError:
        refused.append(1)
    try:
        t.top(5); t.result(); t.merge(a)
    except RuntimeError:
        refused.append(1)
threads = [threading.Thread(target=feed) for _ in range(4)]
for th in threads: th.start()
for th in threads: th.join()
print("ok")
"""
    env = {**os.environ, "LD_PRELOAD": _asan_runtime(), "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_most_lines_bad_is_rejected_few_are_counted(tmp_path):
    good = (DATA / "conntrack_L_6.18").read_bytes()
    p = tmp_path / "few"
    p.write_bytes(good + b"slan attrs=\n")
    rc, doc = run_json("top", "--file", str(p))
    assert rc == 0 and doc["unreadable"] == 1 and doc["total"] == 6
    p.write_bytes(b"garbage line\n" * 7 + good)
    rc, _out, err = run_cli("top", "--file", str(p))
    assert rc == 2 and "line 1:" in err and "7 of 13 lines unreadable" in err
