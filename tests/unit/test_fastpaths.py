"""The fast paths read every line exactly as the general rules do.

- Python: the chunk regex (tier 1, tier 2) and its counting and folding give what feeding every
  line through the reference ``scan_line`` (tests/reference_grammar.py) gives (the reference
  below does just that), for every key and filter, on real lines, mutated real lines, generated listings and hypothesis entries.
- C: the one-pass canonical parser gives what the C general parser gives, which gives what
  ``scan_line`` gives, line by line; and it takes the lines the kernel and conntrack print.
- C ctnetlink decoder = Python decoder, on encoded entries (hypothesis) and a real-shaped dump.
- A file read in ranges (threads, processes) = the same file read as one stream.
"""

from __future__ import annotations

import functools
import os
import random
import socket
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctdoctor.errors import InputError
from ctdoctor.listing import canonical, pyscan
from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.aggregate import PyAggregator
from ctdoctor.listing.entry import Entry, format_entry, save_fields
from ctdoctor.listing.query import parse_query
from ctdoctor.listing.rows import rows
from ctdoctor.listing.tally import Feeder
from ctdoctor.sources import ctnetlink, listing_files
from ctdoctor.sources.listing_files import _tally_span, netlink_feeder, tally_file, tally_stream
from tests.conftest import DATA
from tests.reference_grammar import scan_line
from tests.unit.test_entries_property import entries as entry_strategy
from tests.unit.test_scanner_fuzz import JUNK, LISTINGS, REAL_LINES, corpus, mutate

needs_accel = pytest.mark.skipif(not accelerated(), reason="C accelerator not built")

KEYSETS = ["src", "dst", "sport", "dport", "state", "proto", "zone", "mark", "reply-src", "reply-dst", "l3",
           "pair", "src,dport,state", "dst,proto", "zone,mark,l3"]
FILTERS = [{}, {"state": "ESTABLISHED,UNREPLIED"}, {"state": "ASSURED"}, {"proto": "tcp,udp"}, {"port": 53},
           {"src": "10.0.0.0/8,2001:db8::/32"}, {"dst": "192.0.2.0/24"}]


def query(by: str, **f):
    return parse_query(by, f.get("state"), f.get("proto"), f.get("port"), f.get("src"), f.get("dst"))


def reference(data: bytes, q, skip_first_bad: bool = False):
    """Every line through scan_line (a save line through the save parser), one by one: the rules."""
    agg = PyAggregator(*q.args())
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    bad = first_bad = binary = 0
    first = True
    for n, raw in enumerate(lines, 1):
        ln = raw.strip(b" \r")
        if not ln:
            continue
        if b"\x00" in ln:
            f = None
            binary = binary or n
        elif ln[:3] in (b"-A ", b"-I "):
            f = save_fields(ln)
        else:
            f = scan_line(ln)
        if f is None:
            if not (first and skip_first_bad):
                bad += 1
                first_bad = first_bad or n
        else:
            agg.take(f, 1)
        first = False
    return summary(agg, (len(lines), bad, first_bad), binary)


def summary(agg, fed, binary=None):
    return (fed, agg.total, agg.matched, dict(agg.result()), agg.top(0), agg.top(3), bool(agg.accounting),
            agg.binary_line if binary is None else binary)


def fast(data: bytes, q, force_python: bool, skip_first_bad: bool = False, chunk: int = 0):
    """The aggregator as top feeds it (in chunks of whole lines when chunk > 0)."""
    agg = q.aggregator(force_python=force_python)
    if not chunk:
        return summary(agg, agg.feed(data, skip_first_bad))
    lines = bad = first_bad = binary = 0
    pos = 0
    while pos < len(data):
        cut = data.rfind(b"\n", pos, pos + chunk) + 1 or len(data)
        if cut <= pos:
            cut = data.find(b"\n", pos) + 1 or len(data)
        n, b, fb = agg.feed(data[pos:cut], skip_first_bad and pos == 0)
        if b and not first_bad:
            first_bad = lines + fb
        if agg.binary_line and not binary:
            binary = lines + agg.binary_line
        lines += n
        bad += b
        pos = cut
    return summary(agg, (lines, bad, first_bad), binary)


def text_corpus(seed: int, n: int) -> bytes:
    """Mutated real lines without NUL bytes (a NUL makes a listing binary data: an error)."""
    return b"".join(ln + b"\n" for ln in corpus(seed, n).split(b"\n") if ln and b"\x00" not in ln)


@functools.lru_cache(maxsize=4)  # the same arguments, the same bytes: generated once per session
def listing(n: int, fmt: str, seed: int) -> bytes:
    return subprocess.run([sys.executable, "bench/gen_listing.py", str(n), "-", "--seed", str(seed), "--format", fmt],
                          check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def generated():
    """Listings in the kernel's /proc form (full IPv6) and conntrack's (compressed IPv6), with
    every fixture listing after them."""
    extra = b"".join((DATA / n).read_bytes() for n in LISTINGS)
    return {"proc": listing(6000, "proc", 3) + extra, "extended": listing(6000, "extended", 4) + extra}


# ---- Python: chunk regex = scan_line ------------------------------------------------------------


@pytest.mark.parametrize("by", KEYSETS)
@pytest.mark.parametrize("fmt", ["proc", "extended"])
def test_python_fast_path_equals_scan_line_on_every_key(generated, by, fmt):
    q = query(by)
    assert fast(generated[fmt], q, True) == reference(generated[fmt], q)


@pytest.mark.parametrize("f", FILTERS, ids=str)
def test_python_fast_path_equals_scan_line_with_filters(generated, f):
    for by in ("src", "dport,state"):
        q = query(by, **f)
        assert fast(generated["proc"], q, True, chunk=50000) == reference(generated["proc"], q)


@pytest.mark.parametrize("seed", range(6))
def test_python_fast_path_equals_scan_line_on_mutated_lines(seed):
    data = corpus(100 + seed, 2500)
    for by, f in (("src", {}), ("dst,sport", {"proto": "tcp"}), ("state,zone,mark", {"state": "UNREPLIED"}),
                  ("reply-dst,l3", {"port": 443}), ("pair", {"src": "127.0.0.0/8"})):
        q = query(by, **f)
        assert fast(data, q, True, skip_first_bad=True) == reference(data, q, skip_first_bad=True), (by, f)


@settings(max_examples=200, deadline=None)
@given(st.lists(entry_strategy(), min_size=1, max_size=25), st.sampled_from(KEYSETS),
       st.sampled_from(["proc", "extended", "default"]))
def test_python_fast_path_equals_scan_line_on_generated_entries(es, by, style):
    data = ("\n".join(format_entry(e, style) for e in es) + "\n").encode()
    q = query(by)
    assert fast(data, q, True) == reference(data, q)


def test_kernel_lines_take_the_fast_path(generated):
    """Every line /proc and conntrack -L print is in tier 1 or tier 2: none falls to scan_line."""
    for fmt in ("proc", "extended"):
        data = listing(2000, fmt, 9)
        g = canonical.grammar(frozenset({"src"}))
        found = g.pattern.findall(data)
        slow = [t[g.rest] for t in found if t[g.marker]]
        for ln in slow:
            assert canonical.second_tier()[0].fullmatch(ln + b"\n"), ln
        if fmt == "proc":
            assert not slow  # full-form IPv6: all of it in tier 1


def test_a_canonical_line_with_a_bad_value_is_read_by_the_rules():
    """Values the kernel never prints (leading zeros, a port over 65535, an octet over 255) make a
    line fall out of the fast path; the general rules then read (or reject) it."""
    base = (b"ipv4     2 tcp      6 100 ESTABLISHED src=10.0.0.1 dst=192.0.2.1 sport=40000 dport=443 "
            b"src=192.0.2.1 dst=10.0.0.1 sport=443 dport=40000 [ASSURED] mark=0 zone=0 use=2")
    for old, new, readable in ((b"dport=443 s", b"dport=0443 s", True), (b"sport=40000 d", b"sport=70000 d", False),
                               (b"dst=192.0.2.1 s", b"dst=192.0.2.256 s", False), (b"mark=0", b"mark=00", True),
                               (b"zone=0", b"zone=65536", False), (b"10.0.0.1 d", b"10.0.0.01 d", False)):
        line = base.replace(old, new, 1) + b"\n"
        assert line != base + b"\n"
        for by in ("src", "dport", "mark,zone"):
            q = query(by)
            assert fast(line, q, True) == reference(line, q)
            assert (reference(line, q)[1] == 1) is readable, (old, new)


def _values():
    return ([str(i).encode() for i in range(100000)] + [b"0" * k + str(i).encode() for k in (1, 2) for i in range(1000)]
            + [b"", b"655350", b"1000000", b"2555", b"25 5"])


@pytest.mark.parametrize("fast_form, plain", [(canonical._OCTET, canonical.OCTET_PLAIN), (canonical.PORT, canonical.PORT_PLAIN)],
                         ids=["octet", "port"])
def test_number_patterns_take_exactly_what_the_textbook_forms_take(fast_form, plain):
    """The first-digit-branching octet and port patterns accept every value the textbook
    alternation accepts and nothing else (a value is always followed by a delimiter)."""
    import re

    fast_re, plain_re = re.compile(fast_form + rb" "), re.compile(plain + rb" ")
    differ = [v for v in _values() if bool(fast_re.fullmatch(v + b" ")) != bool(plain_re.fullmatch(v + b" "))]
    assert differ == []
    assert fast_re.fullmatch(b"0 ") and not fast_re.fullmatch(b"00 ")


def test_every_octet_and_port_value_in_a_line_is_read_as_the_rules_read_it():
    """In a whole line, through the fast path and through scan_line: every octet 0-999 (and with a
    leading zero), ports around each boundary of 0-65535."""
    base = (b"ipv4     2 tcp      6 100 ESTABLISHED src=10.0.0.1 dst=192.0.2.1 sport=40000 dport=443 "
            b"src=192.0.2.1 dst=10.0.0.1 sport=443 dport=40000 [ASSURED] mark=0 zone=0 use=2")
    octets = [str(i).encode() for i in range(1000)] + [b"0" + str(i).encode() for i in range(100)]
    ports = [str(p).encode() for b in (0, 9, 99, 999, 5999, 6000, 6499, 6553, 6554, 9999, 59999, 64999, 65499,
                                       65529, 65535, 99999) for p in range(max(0, b - 2), b + 3)] + [b"00", b"080"]
    lines = [base.replace(b"src=10.0.0.1 ", b"src=10.0." + o + b".1 ", 1) for o in octets]
    lines += [base.replace(b"src=192.0.2.1 dst=10.0.0.1 ", b"src=192.0.2.1 dst=" + o + b".0.0.1 ", 1) for o in octets]
    lines += [base.replace(b"dport=443 ", b"dport=" + p + b" ", 1) for p in ports]
    lines += [base.replace(b"sport=443 dport=40000", b"sport=443 dport=" + p, 1) for p in ports]
    data = b"\n".join(lines) + b"\n"
    for by in ("src", "dport", "reply-src,reply-dst"):
        q = query(by)
        assert fast(data, q, True) == reference(data, q)
    accepted = sum(1 for o in octets if o == str(int(o)).encode() and int(o) <= 255)
    assert reference(data, query("src"))[1] >= accepted  # the valid ones were read, not rejected


# ---- C: one pass = general rules = scan_line ----------------------------------------------------


def c_lines():
    rng = random.Random(21)
    lines = list(REAL_LINES)
    lines += [mutate(rng, rng.choice(REAL_LINES)) for _ in range(6000)]
    lines += listing(3000, "proc", 5).splitlines() + listing(3000, "extended", 6).splitlines()
    for ln in REAL_LINES[:40]:  # one token replaced by each junk token
        toks = ln.split(b" ")
        for j in JUNK:
            t = list(toks)
            t[rng.randrange(len(t))] = j
            lines.append(b" ".join(t).replace(b"\n", b" "))
    return lines


@needs_accel
def test_c_one_pass_parser_equals_general_rules_line_by_line():
    from ctdoctor.listing._fastscan import scan_fields

    taken = 0
    for ln in c_lines():
        general = scan_fields(ln, 0)
        assert general == scan_line(ln.strip(b" \r")) if ln.strip(b" \r") else general is None, ln
        canon = scan_fields(ln, 1)
        if canon is not None:
            taken += 1
            assert canon == general, ln
    assert taken > 6000  # the kernel's lines take the one-pass parser


@needs_accel
def test_c_one_pass_parser_takes_every_kernel_line():
    from ctdoctor.listing._fastscan import scan_fields

    for ln in listing(3000, "proc", 8).splitlines() + (DATA / "proc_nf_conntrack_6.18").read_bytes().splitlines():
        assert scan_fields(ln, 1) is not None, ln


@needs_accel
def test_c_ipv6_keys_are_printed_as_inet_ntop_prints_them():
    """The C scanner formats IPv6 keys itself (no sprintf per word): glibc's inet_ntop to the byte,
    the "::" choice, the dotted IPv4-mapped and -compatible forms included."""
    from ctdoctor.listing._fastscan import scan_fields

    rng = random.Random(3)
    special = ["::", "::1", "1::", "::ffff:1.2.3.4", "::1.2.3.4", "::ffff:0:1.2.3.4", "1:0:0:1::", "0:0:1::",
               "1:2:3:4:5:6:7:8", "::ffff", "::fffe:1.2.3.4", "1::2:0:0:3", "1:0:0:2:0:0:0:3", "::0.0.0.1",
               "0:0:0:0:0:1:0:0", "fe80::1:0:0:0", "2001:db8::", "::2:0:0:0:0:0"]
    cases = [socket.inet_pton(socket.AF_INET6, a) for a in special]
    for _ in range(30000):
        b = bytearray(os.urandom(16) if rng.random() < 0.3 else bytes(16))
        for i in range(16):
            if rng.random() < 0.25:
                b[i] = rng.choice([0, 0, 0, 0xFF, 1, 0x10])
        cases.append(bytes(b))
    for b in cases:
        full = ":".join(b[i:i + 2].hex() for i in range(0, 16, 2))
        line = (f"ipv6 10 udp 17 30 src={full} dst={full} sport=1 dport=2 src={full} dst={full} sport=2 dport=1 "
                f"mark=0 use=1").encode()
        f = scan_fields(line, 1)
        assert f is not None and f[3].decode() == socket.inet_ntop(socket.AF_INET6, b), full


@needs_accel
def test_c_and_python_agree_on_top_with_ties():
    """top(limit) picks the best keys by count, then key bytes, in both (the C heap keeps the order)."""
    lines = []
    for i in range(300):
        for _ in range(1 + i % 4):  # many keys with the same count
            lines.append(f"tcp 6 10 ESTABLISHED src=10.0.{i // 256}.{i % 256} dst=192.0.2.1 sport=1 dport=2 "
                         f"src=192.0.2.1 dst=10.0.0.1 sport=2 dport=1 [ASSURED] mark=0 use=1")
    random.Random(1).shuffle(lines)
    data = ("\n".join(lines) + "\n").encode()
    for limit in (1, 7, 75, 76, 0):
        c, py = (query("src").aggregator(force_python=f) for f in (False, True))
        c.feed(data)
        py.feed(data)
        assert c.top(limit) == py.top(limit), limit


@needs_accel
@pytest.mark.parametrize("by", ["src", "state,proto", "dst,dport"])
def test_c_feed_many_equals_separate_feeds(generated, by):
    from ctdoctor.listing._fastscan import feed_many

    qs = [query(by), query("src"), query("state", state="ESTABLISHED")]
    data = generated["extended"] + text_corpus(7, 800)
    alone = [q.aggregator() for q in qs]
    fed = [a.feed(data, True) for a in alone]
    together = [q.aggregator() for q in qs]
    assert feed_many(tuple(together), data, True) == fed[0]
    for a, b in zip(alone, together, strict=True):
        assert (a.total, a.matched, a.result()) == (b.total, b.matched, b.result())


@pytest.mark.parametrize("force_python", [False, True])
def test_one_read_for_several_queries_equals_one_each(generated, force_python):
    """The doctor's summaries read a listing once (C: feed_many; Python: one regex pass with a
    projection per table): the same tables as reading it once per query."""
    if not force_python and not accelerated():
        pytest.skip("C accelerator not built")
    qs = [query(k) for k in ("state", "proto", "src", "dst", "dport")] + [query("src", state="UNREPLIED")]
    data = generated["proc"] + text_corpus(8, 600)
    feeder = Feeder(qs, force_python)
    got = feeder.feed(data, False)
    for q, a in zip(qs, feeder.aggs, strict=True):
        one = q.aggregator(force_python)
        assert one.feed(data, False) == got
        assert (one.total, one.matched, dict(one.result())) == (a.total, a.matched, dict(a.result()))


# ---- accounting, binary data ------------------------------------------------------------------


@pytest.mark.parametrize("force_python", [False, True])
def test_accounting_is_counters_in_an_entry_not_the_word_in_a_line(force_python):
    if not force_python and not accelerated():
        pytest.skip("C accelerator not built")
    plain = (b"tcp 6 10 ESTABLISHED src=10.0.0.1 dst=192.0.2.1 sport=1 dport=2 src=192.0.2.1 dst=10.0.0.1 "
             b"sport=2 dport=1 [ASSURED] mark=0 secctx=packets=1 use=1\n")
    junk = b"garbage packets=3 bytes=4\n"
    acct = (b"tcp 6 10 ESTABLISHED src=10.0.0.1 dst=192.0.2.1 sport=1 dport=2 packets=3 bytes=180 src=192.0.2.1 "
            b"dst=10.0.0.1 sport=2 dport=1 packets=0 bytes=0 [ASSURED] mark=0 use=1\n")
    for data, want in ((plain * 3, False), (plain * 3 + junk, False), (plain + acct, True)):
        a = query("src").aggregator(force_python=force_python)
        a.feed(data)
        assert a.accounting is want, data


@pytest.mark.parametrize("force_python", [False, True])
def test_a_nul_byte_is_reported_where_it_is(force_python, tmp_path):
    """Binary data in a listing is an error naming its line, also where the line is otherwise in
    the canonical shape (a NUL inside a secctx value), in a stream and in a file read in ranges."""
    if not force_python and not accelerated():
        pytest.skip("C accelerator not built")
    good = listing(30000, "proc", 11)
    bad = (b"ipv4     2 tcp      6 10 ESTABLISHED src=10.0.0.1 dst=192.0.2.1 sport=1 dport=2 src=192.0.2.1 "
           b"dst=10.0.0.1 sport=2 dport=1 [ASSURED] mark=0 secctx=a\x00b zone=0 use=2\n")
    data = good + bad + good
    p = tmp_path / "bin"
    p.write_bytes(data)
    line = good.count(b"\n") + 1
    q = query("src")
    with open(p, "rb") as f, pytest.raises(InputError, match=f"line {line}: binary data"):
        tally_stream(f, q, force_python=force_python)
    with pytest.raises(InputError, match=f"line {line}: binary data"):
        tally_file(str(p), q, workers=3, force_python=force_python)


# ---- file ranges = one stream --------------------------------------------------------------


def _same(a, b, q):
    assert (a.total, a.matched, a.lines, a.unreadable, a.first_bad) == (b.total, b.matched, b.lines, b.unreadable,
                                                                       b.first_bad)
    assert rows(a, q, None) == rows(b, q, None)


@pytest.fixture(scope="module")
def ranges_listing(tmp_path_factory):
    """A listing over the 8 MiB from which a file is read in ranges, written once, and its one-stream
    tally for each query and scanner, read once (every worker count compares with the same)."""
    p = tmp_path_factory.mktemp("ranges") / "l"
    p.write_bytes((listing(60000, "extended", 12) + text_corpus(13, 300))[:-1])  # and no newline at the end
    streams: dict = {}

    def stream(by: str, force_python: bool):
        if (by, force_python) not in streams:
            with open(p, "rb") as f:
                streams[by, force_python] = tally_stream(f, query(by), force_python=force_python)
        return streams[by, force_python]

    return p, stream


@pytest.mark.parametrize("force_python", [False, True])
@pytest.mark.parametrize("workers", [2, 3, 5])
def test_a_file_in_ranges_equals_one_stream(ranges_listing, force_python, workers):
    if not force_python and not accelerated():
        pytest.skip("C accelerator not built")
    p, stream = ranges_listing
    assert p.stat().st_size > 8 << 20
    for by in ("src", "dst,dport,state"):
        q = query(by)
        _same(tally_file(str(p), q, workers=workers, force_python=force_python), stream(by, force_python), q)


@pytest.mark.parametrize("force_python", [False, True])
def test_a_line_longer_than_the_read_buffer_is_one_unreadable_line(tmp_path, force_python):
    if not force_python and not accelerated():
        pytest.skip("C accelerator not built")
    good = listing(40000, "proc", 14)
    p = tmp_path / "long"
    p.write_bytes(good + b"tcp 6 1 src=" + b"7" * (5 << 20) + b"\n" + good)
    q = query("src")
    t = tally_file(str(p), q, workers=2, force_python=force_python)
    n = good.count(b"\n")
    assert t.total == 2 * n and t.unreadable == 1 and t.first_bad[0] == n + 1
    with open(p, "rb") as f:
        _same(t, tally_stream(f, q, force_python=force_python), q)


def test_a_reader_process_that_fails_is_a_one_line_error(tmp_path, monkeypatch):
    """The pure-Python path reads ranges in forked children: one that fails is an error, not a
    silently smaller table."""
    p = tmp_path / "l"
    p.write_bytes(listing(60000, "proc", 15))  # over 8 MiB: read in ranges
    real = _tally_span

    def failing(path, start, end, q, force_python=False):
        if start > 0:
            raise RuntimeError("disk on fire")
        return real(path, start, end, q, force_python)

    monkeypatch.setattr(listing_files, "_tally_span", failing)
    with pytest.raises(InputError, match="reading failed: RuntimeError: disk on fire"):
        tally_file(str(p), query("src"), workers=2, force_python=True)


def test_the_stream_reader_turns_a_read_error_into_an_input_error():
    class Broken:
        def __init__(self):
            self.n = 0

        def readinto(self, buf):
            self.n += 1
            if self.n > 2:
                raise OSError(5, "Input/output error")
            line = (b"tcp 6 1 ESTABLISHED src=1.2.3.4 dst=5.6.7.8 sport=1 dport=2 src=5.6.7.8 dst=1.2.3.4 "
                    b"sport=2 dport=1 [ASSURED] mark=0 use=1\n")
            buf[:len(line)] = line
            return len(line)

    with pytest.raises(InputError, match="truncated or corrupt"):
        tally_stream(Broken(), query("src"))


# ---- ctnetlink: C decoder = Python decoder --------------------------------------------------------

A = ctnetlink._attr


def _nl_tuple(e: Entry, t) -> bytes:
    six = e.l3 == "ipv6"
    fam = socket.AF_INET6 if six else socket.AF_INET
    ip = (A(3 if six else 1, socket.inet_pton(fam, t.src)) + A(4 if six else 2, socket.inet_pton(fam, t.dst)))
    proto = A(1, bytes([e.protonum]))
    if t.sport is not None:
        proto += A(2, struct.pack(">H", t.sport)) + A(3, struct.pack(">H", t.dport))
    elif t.srckey is not None:
        proto += A(2, struct.pack(">H", t.srckey & 0xFFFF)) + A(3, struct.pack(">H", t.dstkey & 0xFFFF))
    elif t.icmp_type is not None:
        base = 7 if e.proto == "icmpv6" else 4
        proto += A(base, struct.pack(">H", t.icmp_id)) + A(base + 1, bytes([t.icmp_type])) + A(base + 2,
                                                                                                bytes([t.icmp_code]))
    body = A(1, ip, True) + A(2, proto, True)
    if t.zone is not None:
        body += A(3, struct.pack(">H", t.zone))
    return body


def encode(e: Entry, state_index: int | None = None) -> bytes:
    """A CT_NEW message as a dump carries it (the attributes of nfnetlink_conntrack.h)."""
    status = (0 if e.unreplied else 1 << 1) | (1 << 2 if e.assured or e.offload else 0)
    status |= {None: 0, "OFFLOAD": 1 << 14, "HW_OFFLOAD": 1 << 15}[e.offload]
    body = A(1, _nl_tuple(e, e.orig), True) + A(2, _nl_tuple(e, e.reply), True) + A(3, struct.pack(">I", status))
    if e.state is not None or state_index is not None:
        names = {"tcp": ctnetlink.TCP_STATES, "sctp": ctnetlink.SCTP_STATES, "dccp": ctnetlink.DCCP_STATES}[e.proto]
        idx = names.index(e.state) if state_index is None else state_index
        body += A(4, A({"tcp": 1, "dccp": 2, "sctp": 3}[e.proto], A(1, bytes([idx])), True), True)
    if e.timeout is not None:
        body += A(7, struct.pack(">I", e.timeout))
    if e.mark is not None:
        body += A(8, struct.pack(">I", e.mark))
    for key, t in ((9, e.orig), (10, e.reply)):
        if t.packets is not None:
            body += A(key, A(1, struct.pack(">Q", t.packets)) + A(2, struct.pack(">Q", t.bytes)), True)
    body += A(11, struct.pack(">I", e.use or 1)) + A(12, struct.pack(">I", 7))
    if e.zone is not None:
        body += A(18, struct.pack(">H", e.zone))
    if e.secctx is not None:
        body += A(19, A(1, e.secctx.encode() + b"\0"), True)
    nfgen = struct.pack("=BBH", socket.AF_INET6 if e.l3 == "ipv6" else socket.AF_INET, 0, 0)
    payload = nfgen + body
    return struct.pack("=IHHII", 16 + len(payload), (1 << 8) | 0, 2, 1, 0) + payload


DONE = struct.pack("=IHHIIi", 20, 3, 2, 1, 0, 0)


def both_netlink(buf: bytes, queries):
    out = []
    for force in (False, True):
        feeder = netlink_feeder(queries, force_python=force)
        fed = feeder.feed_netlink(buf)
        out.append((fed, [(a.total, a.matched, bool(a.accounting), dict(a.result()), a.top(0)) for a in feeder.aggs]))
    return out


@needs_accel
@settings(max_examples=200, deadline=None)
@given(st.lists(entry_strategy(), min_size=1, max_size=20), st.sampled_from(KEYSETS), st.booleans())
def test_c_netlink_decoder_equals_python_on_encoded_entries(es, by, done):
    for e in es:  # counters as the kernel keeps them: 64-bit sums
        for t in (e.orig, e.reply):
            if t.packets is not None:
                t.packets, t.bytes = t.packets >> 16, t.bytes >> 16
    buf = b"".join(encode(e) for e in es) + (DONE if done else b"")
    qs = [query(by), query("src", state="ASSURED,UNREPLIED"), query("dport", proto="tcp,udp")]
    c, py = both_netlink(buf, qs)
    assert c == py
    assert c[0] == (len(es), 0, done)


@needs_accel
@settings(max_examples=200, deadline=None)
@given(st.lists(entry_strategy(), min_size=1, max_size=40), st.sampled_from(KEYSETS), st.sampled_from(FILTERS),
       st.integers(1, 7))
def test_c_netlink_decoder_equals_python_alone_filtered_and_sampled(es, by, f, every):
    """Each aggregator alone (the decoder prints only the fields some aggregator reads), with a filter
    that reads ports or addresses, and counting every n-th entry (the exporter's sampled tops)."""
    buf = b"".join(encode(e) for e in es) + DONE
    for q in (query(by), query(by, **f)):
        q.every = every
        c, py = both_netlink(buf, [q])
        assert c == py
        assert c[1][0][0] == len(es)  # every entry is read; 1 in every is counted
        if not f:
            assert c[1][0][1] == -(-len(es) // every)


@needs_accel
def test_sampling_keeps_its_place_across_receive_buffers():
    """A dump comes in many buffers: the n-th entry is the n-th of the dump, not of a buffer."""
    e = Entry("ipv4", "udp", 17, 30, None, ctnetlink.Tuple("10.0.0.1", "192.0.2.1", 1000, 53),
              ctnetlink.Tuple("192.0.2.1", "10.0.0.1", 53, 1000), use=1)
    for force in (False, True):
        q = query("dport")
        q.every = 4
        feeder = netlink_feeder([q], force_python=force)
        for _ in range(10):
            feeder.feed_netlink(encode(e) * 3)
        assert (feeder.aggs[0].total, feeder.aggs[0].matched) == (30, 8)  # entries 0, 4, ... 28


@needs_accel
def test_c_netlink_decoder_prints_what_a_filter_reads_though_no_key_shows_it():
    """Grouped by state only, a port or network filter still sees the entry's ports and addresses."""
    e = Entry("ipv4", "udp", 17, 30, None, ctnetlink.Tuple("10.0.0.1", "192.0.2.1", 1000, 53),
              ctnetlink.Tuple("192.0.2.1", "10.0.0.1", 53, 1000), mark=7, zone=3, use=1)
    buf = encode(e) * 5 + DONE
    for q in (query("state", port=53), query("state", src="10.0.0.0/8"), query("proto", dst="192.0.2.1"),
              query("mark,zone")):
        c, py = both_netlink(buf, [q])
        assert c == py
        assert c[1][0][1] == 5, q  # all five pass the filter
    c, _ = both_netlink(buf, [query("mark,zone")])
    assert list(c[1][0][3]) == [(b"7\x1f3", b"REPLIED")]  # Entry default: replied, not assured


@needs_accel
@settings(max_examples=200, deadline=None)
@given(st.lists(entry_strategy(), min_size=1, max_size=30), st.sampled_from(
    [("ALL",), ("UNREPLIED",), ("ASSURED",), ("ESTABLISHED", "TIME_WAIT"), ("SYN_SENT", "UNREPLIED")]),
    st.sampled_from([None, 53, 80]), st.sampled_from([None, "10.0.0.0/8", "2001:db8::/32"]), st.booleans())
def test_flush_selection_in_c_equals_the_python_rules(es, states, port, src, protect):
    """netlink_select (flush's C path) picks exactly the entries flush's Python rules pick, and asks
    the kernel to delete each by the dump's own CTA_TUPLE_ORIG, zone and CTA_ID."""
    from ctdoctor.listing._fastscan import netlink_select
    from ctdoctor.listing.aggregate import Filter
    from ctdoctor.write.flush import matches, selection_args

    buf = b"".join(encode(e) for e in es) + DONE
    q = parse_query("state", None if "ALL" in states else ",".join(states), None, port, src, None)
    n, m, p, bad, done, req = netlink_select(q.aggregator(), buf, protect, 1)
    decoded = list(ctnetlink.entries_from(iter([buf])))
    flt = Filter(*selection_args(set(states), port, src, None)[1:])
    want = [matches(e, flt, not protect) for e in decoded]
    assert (n, bad, done) == (len(es), 0, True)
    assert m == sum(ok for ok, _ in want) and p == sum(prot for _, prot in want)
    picked = [e for e, (ok, _) in zip(decoded, want, strict=True) if ok]
    msgs = list(ctnetlink.messages(req))
    assert len(msgs) == m
    for (typ, off, end), e in zip(msgs, picked, strict=True):
        assert typ == (1 << 8) | 2 and struct.unpack_from("=H", req, off + 6)[0] == 0x5  # REQUEST|ACK
        ours = req[off:end]
        theirs = ctnetlink.delete_message(e, 0)
        # the same attributes as the Python path sends for that entry: tuple (as dumped), zone, id
        assert ours[16:20] == theirs[16:20]
        assert _attrs(ours[20:]).keys() >= {1} and _attrs(ours[20:]).get(12) == _attrs(theirs[20:]).get(12)


def _attrs(body: bytes) -> dict:
    out, off = {}, 0
    while off + 4 <= len(body):
        ln, typ = struct.unpack_from("=HH", body, off)
        out[typ & 0x3FFF] = body[off + 4:off + ln]
        off += (ln + 3) & ~3
    return out


@needs_accel
def test_c_netlink_decoder_on_states_out_of_range_and_missing_attributes():
    e = Entry("ipv4", "tcp", 6, 100, "ESTABLISHED", ctnetlink.Tuple("10.0.0.1", "192.0.2.1", 1, 2),
              ctnetlink.Tuple("192.0.2.1", "10.0.0.1", 2, 1), assured=True, mark=None, use=1)
    msgs = [encode(e), encode(e, state_index=12), encode(Entry("ipv6", "unknown", 2, None, None,
                                                               ctnetlink.Tuple("::1", "::2"),
                                                               ctnetlink.Tuple("::2", "::1"), use=1))]
    c, py = both_netlink(b"".join(msgs) + DONE, [query("state"), query("mark,proto"), query("zone,l3")])
    assert c == py
    states = {lab for _k, lab in c[1][0][3]}
    assert states == {b"ESTABLISHED", b"12", b"REPLIED"}  # an unlisted state index is its number


@needs_accel
def test_c_netlink_decoder_survives_cut_and_flipped_messages():
    """Mutated messages: never a crash, and what is counted is a well-formed message."""
    from ctdoctor.listing._fastscan import netlink_done

    rng = random.Random(4)
    base = b"".join(encode(e) for e in (
        Entry("ipv4", "udp", 17, 30, None, ctnetlink.Tuple("10.0.0.1", "10.0.0.2", 5, 53),
              ctnetlink.Tuple("10.0.0.2", "10.0.0.1", 53, 5), unreplied=True, mark=3, use=1),
        Entry("ipv6", "tcp", 6, 30, "SYN_SENT", ctnetlink.Tuple("::1", "::2", 5, 80),
              ctnetlink.Tuple("::2", "::1", 80, 5), unreplied=True, mark=0, use=1)))
    for _ in range(3000):
        b = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(b))
            b[i] = rng.randrange(256)
        if rng.random() < 0.3:
            b = b[:rng.randrange(len(b))]
        agg = query("src,dport,state").aggregator()
        try:
            n, malformed, _done = agg.feed_netlink(bytes(b))
            netlink_done(bytes(b))
        except OSError:
            continue  # a flipped type made it an NLMSG_ERROR: raised, as the kernel's would be
        assert n + malformed <= 2 and agg.total == n


def test_python_netlink_decoder_counts_malformed_messages():
    e = Entry("ipv4", "udp", 17, 30, None, ctnetlink.Tuple("10.0.0.1", "10.0.0.2", 5, 53),
              ctnetlink.Tuple("10.0.0.2", "10.0.0.1", 53, 5), mark=3, use=1)
    good = encode(e)
    cut = bytearray(good)
    struct.pack_into("=I", cut, 0, 24)  # a message that ends after its first attribute's header
    entries, malformed, done = ctnetlink.decode_messages(good + bytes(cut[:24]) + DONE)
    assert (len(entries), malformed, done) == (1, 1, True)
    assert entries[0].orig.dport == 53 and entries[0].mark == 3


def test_the_canonical_grammar_names_what_it_captures():
    g = canonical.grammar(frozenset({"src", "dport", "zone"}))
    assert {"t1", "state_src", "dport", "zorig", "zrep", "zone", "unrep", "tflag", "acct_o", "acct_r"} <= set(g.at)
    with pytest.raises(ValueError):
        canonical.grammar(frozenset({"nonsense"}))
    assert pyscan.needs(query("l3").aggregator(force_python=True)) == frozenset({"l3", "src"})
