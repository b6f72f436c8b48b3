"""One grammar for a listing line: production's reader (``listing.entry.read_line``, behind
``parse_line`` and the pure-Python scanner's general path) gives what the reference
(``tests/reference_grammar.py``, the C scanner's readable twin) gives, on real, mutated and
generated lines, and refuses exactly what it refuses; the C scanner's field ids are the ones
``listing/fields.py`` names."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctdoctor.listing import fields
from ctdoctor.listing.entry import EntryParseError, label, parse_line, read_line
from ctdoctor.listing.formats import Format, NoiseRepair, repair_lines, sniff
from ctdoctor.listing.grammar import scan_line
from tests import reference_grammar
from tests.unit.test_scanner_fuzz import JUNK, REAL_LINES, mutate

GOOD = (b"ipv4     2 tcp      6 117 TIME_WAIT src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 "
        b"src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2")


def agree(line: bytes) -> None:
    """Production and the reference read the line alike, and the entry says what the fields say."""
    line = line.strip(b" \r")
    if not line:
        return
    ref = reference_grammar.scan_line(line)
    assert scan_line(line) == ref, line
    try:
        e, f = read_line(line)
    except EntryParseError:
        assert ref is None, line
        return
    assert f == ref, line
    assert (e.l3.encode(), label(e).encode(), e.unreplied, e.assured) == (
        f[fields.S_L3], f[fields.S_LABEL], f[fields.S_UNREPLIED], f[fields.S_ASSURED])
    assert (e.orig.src.encode(), e.orig.dst.encode(), e.reply.src.encode(), e.reply.dst.encode()) == (
        f[fields.S_SRC], f[fields.S_DST], f[fields.S_RSRC], f[fields.S_RDST])
    assert (str(e.orig.sport).encode() if e.orig.sport is not None else b"") == f[fields.S_SPORT]
    assert str(e.mark or 0).encode() == f[fields.S_MARK]
    text = line.decode("utf-8", "replace")
    if text.encode() == line and line == line.strip():  # the text form reads the same
        assert parse_line(text) == e


@pytest.mark.parametrize("bad", [
    GOOD.replace(b"src=10.0.0.1", b"src=1.2.3.999"),  # an octet over 255
    GOOD.replace(b"src=10.0.0.1", b"src=01.2.3.4"),  # a leading zero: inet_pton refuses it
    GOOD.replace(b"dst=10.0.0.2", b"dst=1.2.3"),
    GOOD.replace(b"sport=40000", b"sport=65536"),
    GOOD.replace(b"mark=0", b"mark=0x10"),  # marks are plain decimal
    GOOD.replace(b"zone=0", b"zone=65536"),
    GOOD.replace(b" 6 117", b" 256 117"),  # protocol number over 255
    GOOD.replace(b" [ASSURED]", b" src=1.1.1.1 dst=1.1.1.2 [ASSURED]"),  # a third tuple
    GOOD.replace(b"src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 ", b""),  # one tuple
])
def test_parse_line_refuses_what_the_scanners_refuse(bad):
    assert reference_grammar.scan_line(bad) is None
    agree(bad)
    with pytest.raises(EntryParseError):
        parse_line(bad.decode())


def test_a_lower_case_state_is_a_word_not_a_state():
    """``established`` is no state the kernel prints: the scanners skip it as a vendor word, and so
    does parse_line (the entry has no state; its label comes from the flags)."""
    line = GOOD.replace(b"TIME_WAIT", b"time_wait")
    agree(line)
    e = parse_line(line.decode())
    assert e.state is None and label(e) == "ASSURED" and e.extra["words"] == ["time_wait"]


def test_real_lines_agree():
    for ln in REAL_LINES:
        agree(ln)


@pytest.mark.parametrize("seed", range(3))
def test_mutated_real_lines_agree(seed):
    rng = random.Random(seed)
    for _ in range(3000):
        agree(mutate(rng, rng.choice(REAL_LINES)))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(REAL_LINES), st.integers(0, 2**32))
def test_hypothesis_mutations_agree(line, seed):
    agree(mutate(random.Random(seed), line))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(JUNK), st.sampled_from(GOOD.split(b" ")),
                          st.binary(max_size=12).filter(lambda b: b"\n" not in b)), min_size=3, max_size=30))
def test_hypothesis_token_soups_agree(tokens):
    agree(b" ".join(tokens))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 999), st.integers(0, 999), st.booleans())
def test_every_octet_agrees(a, b, lead):
    addr = (f"0{a}" if lead else str(a)) + f".{b}.0.1"
    agree(GOOD.replace(b"src=10.0.0.1", f"src={addr}".encode()))


def test_field_ids_are_the_c_scanners():
    """fastscan.h's enum of key fields is the one listing/fields.py names."""
    c = (Path(fields.__file__).parent / "fastscan" / "fastscan.h").read_text()
    m = re.search(r"enum \{ (F_SRC[^}]*) \};", c)
    assert m is not None
    names = [n.strip() for n in m.group(1).split(",")]
    assert names[-1] == "NFIELDS" and len(names) - 1 == fields.NFIELDS
    assert [getattr(fields, n) for n in names[:-1]] == list(range(fields.NFIELDS))


def test_the_format_is_told_once():
    assert sniff(b"\x1f\x8b\x08") is Format.GZIP
    assert sniff(b"  -A -t 29 -u ASSURED -s 1.2.3.4") is Format.SAVE
    assert sniff(b'<?xml version="1.0"') is Format.XML
    assert sniff(GOOD) is Format.LISTING


def test_the_noise_is_removed_alike_from_text_and_chunks():
    """An entry split by conntrack-tools' stderr is rejoined by the line reader and the chunk reader."""
    head, tail = GOOD[:60], GOOD[60:]
    noise = b"conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown."
    text = [GOOD.decode(), (head + noise).decode(), tail.decode(), noise.decode()]
    assert [ln for _n, ln in repair_lines(text)] == [GOOD.decode(), GOOD.decode()]
    chunk = NoiseRepair().clean(b"\n".join(t.encode() for t in text) + b"\n")
    assert [ln for ln in chunk.split(b"\n") if ln] == [GOOD, GOOD]
