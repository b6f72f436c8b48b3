"""The canonical entry line as one compiled regex: the fast path of the pure-Python scanner.

The kernel (``ct_seq_show``) and conntrack-tools (``__snprintf_conntrack_default``) print every
entry in one shape. ``grammar.scan_line`` reads any line by the general rules; this module matches
only lines in the exact shape below, with every value checked by those same rules inside the
regex, so a line it matches gives exactly what ``scan_line`` gives (a differential test holds
both to it). One ``findall`` per chunk reads every line of the chunk at C speed; the caller
counts the captured tuples with ``collections.Counter`` (also C) and folds the distinct tuples
into its table. Lines that do not match are read by ``scan_line``, one by one: nothing is
decided here that the general rules would decide differently.

The shape (``[x]`` optional; the head columns are padded as ``%-8s`` pads them, the rest has
single spaces, as both print it)::

    [ipv4|ipv6 L3NUM] PROTO PROTONUM [TIMEOUT] [STATE]
    src=A dst=A [sport=P dport=P | type=N code=N id=N | srckey=0xH dstkey=0xH] [zone-orig=Z]
    [packets=C bytes=C] [[UNREPLIED]]
    src=A dst=A [the same port forms] [zone-reply=Z] [packets=C bytes=C]
    [[ASSURED]|[OFFLOAD]|[HW_OFFLOAD]] [mark=M] [secmark=N] [secctx=S] [zone=Z] [delta-time=N]
    [helper=S] use=N [id=N] [labels=S]

- PROTO: a lowercase letter, then lowercase letters and digits (at most 32); PROTONUM 0-255;
  STATE ``[A-Z0-9_]{1,32}``. A line that starts with ``ipv4``/``ipv6``/``unknown`` but not
  with the l3 columns is left to ``scan_line`` (its head rule decides those).
- A: an IPv4 dotted quad as ``inet_pton`` takes it (no leading zeros, octets <= 255), or an
  IPv6 address in the full 8 x 4 hex form that /proc prints (tier 1; always valid). Any other
  IPv6 text (conntrack -L prints them compressed) matches as tier 2 and is checked line by
  line with inet_pton (``scan.norm_addr``, cached).
- P and Z: 0-65535 and M: 0..2^32-1, all without leading zeros (the kernel never prints them;
  ``scan_line`` reads such a line and removes them); C: at most 19 digits (always < 2^64).

Optional parts are written ``(?:X|)``, not ``(?:X)?``: a branch whose first character is
checked before it is entered costs the regex engine less than a repeat (13 % of a line here);
each starts with its own keyword, so the empty branch never makes another reading of a line.

The chunk regex has two alternatives: tier 1 (IPv4 and full-form IPv6 lines; only the groups
the caller asked for) and the rest of the line. A marker group is set for every non-empty line
that is not tier 1, so ``any(map(itemgetter(marker), found))`` tells in one C-level pass
whether a chunk needs the slow path at all; there, ``second_tier()`` (every field, any IPv6 text)
is tried on the line before ``scan_line``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ---- value patterns (each checks what scan_line checks) ---------------------------------------

# A value is always followed by a delimiter, never a digit: each number pattern branches on its
# first digit and then takes the digits the value may have, so a wrong branch is left after one
# character; and the dotted quad and the full IPv6 form are written out, not repeated with {3}
# and {7} (a counted group is the regex engine's slowest construct). Against the textbook
# (25[0-5]|2[0-4]\d|...)(\.(...)){3} that is a quarter of the time of a whole line; a test
# holds them to the textbook forms on every value.
_OCTET = rb"(?:1\d{0,2}+|2(?:[0-4]\d?|5[0-5]?|[6-9]|)|[3-9]\d?|0)"  # 0-255, no leading zero
IPV4 = rb"\.".join([_OCTET] * 4)
_HEX4 = rb"[0-9a-fA-F]{4}"
IPV6_FULL = rb":".join([_HEX4] * 8)
# Any text of IPv6 characters with a ':' and at most 45 long; inet_pton has the last word.
IPV6_LOOSE = rb"(?=[0-9a-fA-F.]*+:)[0-9a-fA-F:.]{2,45}+"
PORT = (rb"(?:[1-5]\d{0,4}+|6(?:[0-4]\d{0,3}+|5(?:[0-4]\d{0,2}+|5(?:[0-2]\d?+|3[0-5]?+|[4-9]|)|[6-9]\d?+|)|"
        rb"[6-9]\d{0,2}+|)|[7-9]\d{0,3}+|0)")  # 0-65535, no leading zero
# the textbook forms, for the test that holds the ones above to them
OCTET_PLAIN = rb"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
PORT_PLAIN = rb"(?:[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d\d|655[0-2]\d|6553[0-5]|[1-9]\d{0,3}|0)"
U32 = (rb"(?:0|[1-9]\d{0,8}|[1-3]\d{9}|4[01]\d{8}|42[0-8]\d{7}|429[0-3]\d{6}|4294[0-8]\d{5}|"
       rb"42949[0-5]\d{4}|429496[0-6]\d{3}|4294967[01]\d\d|42949672[0-8]\d|429496729[0-5])")
PROTONUM = rb"(?:25[0-5]|2[0-4]\d|[01]?\d?\d)"
COUNTERS = rb"packets=\d{1,19}+ bytes=\d{1,19}+ "
SP = rb" "  # the body is printed with single spaces; only the head columns are padded (%-8s)

# the fields a caller can ask for (tier-1 groups); the rest are always captured
FIELDS = ("l3", "proto", "src", "dst", "sport", "dport", "rsrc", "rdst", "zone", "mark")
# always captured in tier 1 (state_src stands for state and src when src is wanted)
ALWAYS = ("t1", "state", "acct_o", "unrep", "acct_r", "tflag")


class _Builder:
    """Pattern text with numbered groups, remembering which group holds which field."""

    def __init__(self, first: int):
        self.parts: list[bytes] = []
        self.next = first
        self.at: dict[str, int] = {}

    def lit(self, p: bytes) -> None:
        self.parts.append(p)

    def group(self, name: str, p: bytes, capture: bool) -> None:
        if capture:
            self.at[name] = self.next - 1  # findall tuple index
            self.next += 1
            self.parts.append(b"(" + p + b")")
        else:
            self.parts.append(b"(?:" + p + b")")

    def text(self) -> bytes:
        return b"".join(self.parts)


def _l4(b: _Builder, sport: bool, dport: bool) -> None:
    """The ports (each captured when asked: a captured source port, nearly unique per entry,
    would make every line a tuple of its own), ICMP's type/code/id or GRE's keys."""
    b.lit(rb"(?:sport=")
    b.group("sport", PORT, sport)
    b.lit(SP + rb"dport=")
    b.group("dport", PORT, dport)
    b.lit(SP + rb"|type=\d++ code=\d++ id=\d++ |srckey=0x[0-9a-f]++ dstkey=0x[0-9a-f]++ |)")


def _line(b: _Builder, want: frozenset[str], tier2: bool, combine: bool = False) -> None:
    """One tier's line pattern. Tier 2 captures every field as text and takes any IPv6 text.

    Tier 1 captures as few new objects per line as it can, since each costs the counting
    a hash and a compare: the state together with the source address when the source is
    wanted (``state_src``: they are adjacent), and the flags and the tier-1 marker as one
    character (CPython shares one-byte bytes objects): ``unrep`` is ``U``, ``tflag`` is
    ``A``/``O``/``H`` (ASSURED, OFFLOAD, HW_OFFLOAD), ``t1`` is the line's first letter.
    """

    def want_(name: str) -> bool:
        return tier2 or name in want

    def addr(name: str, capture: bool | None = None) -> None:
        if tier2:
            b.group(name, IPV4 + b"|" + IPV6_FULL + b"|" + IPV6_LOOSE, True)
        else:
            b.group(name, IPV4 + b"|" + IPV6_FULL, want_(name) if capture is None else capture)

    def rest_of_tuple(dst: str, sport: bool, dport: bool, zone_word: bytes, zone: str, acct: str) -> None:
        """A tuple after its source address: `` dst=A <l4> [zone-orig=Z ][packets=C bytes=C ]``."""
        b.lit(SP + rb"dst=")
        addr(dst)
        b.lit(SP)
        _l4(b, sport, dport)
        b.lit(rb"(?:" + zone_word + b"=")
        b.group(zone, PORT, want_("zone"))
        b.lit(SP + rb"|)")
        b.group(acct, COUNTERS + b"|", True)

    if not tier2:
        b.lit(rb"(?=")
        b.group("t1", rb"[a-z]", True)
        b.lit(rb")")
    b.lit(rb"(?:")
    b.group("l3", rb"ipv4|ipv6", want_("l3"))
    b.lit(rb" ++\d++ ++|(?!ipv4 |ipv6 |unknown ))")
    b.group("proto", rb"(?!unknown )[a-z][a-z0-9]{0,31}+", want_("proto"))  # unnamed: the general rule
    b.lit(rb" ++" + PROTONUM + rb" ++(?:\d++ ++|)")
    if not tier2 and combine and want_("src"):
        b.group("state_src", rb"(?:[A-Z0-9_]{1,32}+ ++|)src=(?:" + IPV4 + b"|" + IPV6_FULL + b")", True)
    else:
        b.lit(rb"(?:")
        b.group("state", rb"[A-Z0-9_]{1,32}+", True)
        b.lit(rb" ++|)src=")
        addr("src")
    rest_of_tuple("dst", want_("sport"), want_("dport"), b"zone-orig", "zorig", "acct_o")
    if tier2:
        b.group("unrep", rb"\[UNREPLIED\] |", True)
        b.lit(rb"src=")
    else:
        b.lit(rb"(?:\[")
        b.group("unrep", rb"U", True)
        b.lit(rb"NREPLIED\] |)src=")
    addr("rsrc")
    rest_of_tuple("rdst", False, False, b"zone-reply", "zrep", "acct_r")
    b.lit(rb"(?:\[")
    if tier2:
        b.group("tflag", rb"ASSURED|OFFLOAD|HW_OFFLOAD", True)
    else:
        b.lit(rb"(?=")
        b.group("tflag", rb"[AOH]", True)
        b.lit(rb")(?:ASSURED|OFFLOAD|HW_OFFLOAD)")
    b.lit(rb"\] |)(?:mark=")
    b.group("mark", U32, want_("mark"))
    b.lit(SP + rb"|)(?:secmark=\d++ |)(?:secctx=[^ \n\x00]++ |)(?:zone=")
    b.group("zone", PORT, want_("zone"))
    b.lit(SP + rb"|)(?:delta-time=\d++ |)(?:helper=[^ \n\x00]++ |)use=\d++(?: id=\d++|)(?: labels=[^ \n\x00]++|)"
          rb"[ \r]*+\n")


@dataclass(frozen=True)
class Grammar:
    """The compiled chunk pattern (tier 1 + the rest) and where its groups are in a ``findall`` tuple."""

    pattern: re.Pattern[bytes]
    at: dict[str, int]  # field -> index of its tier-1 group
    marker: int  # non-empty for every non-empty line that is not tier 1
    rest: int  # that whole line


_cache: dict[tuple[frozenset[str], bool], Grammar] = {}


def grammar(want: frozenset[str], combine: bool = True) -> Grammar:
    """The chunk pattern capturing ``want`` (a subset of FIELDS) besides ALWAYS; with ``combine``,
    a wanted source address is captured with the state as ``state_src``."""
    g = _cache.get((want, combine))
    if g is not None:
        return g
    unknown = set(want) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    t1 = _Builder(1)
    _line(t1, want, tier2=False, combine=combine)
    marker = t1.next - 1
    text = b"(?:" + t1.text() + b"|(?=([^\n]))([^\n]*+)\n|\n)"
    pat = re.compile(text)
    assert pat.groups == marker + 2
    g = Grammar(pat, t1.at, marker, marker + 1)
    _cache[(want, combine)] = g
    return g


_tier2: tuple[re.Pattern[bytes], dict[str, int]] | None = None


def second_tier() -> tuple[re.Pattern[bytes], dict[str, int]]:
    """One line (with its newline) in the shape, every field captured, IPv6 in any text: lines of
    ``conntrack -L`` with compressed IPv6 addresses; and the group number of each field.
    Compiled when first asked for (15 ms: most listings never need it)."""
    global _tier2
    if _tier2 is None:
        b = _Builder(1)
        _line(b, frozenset(), tier2=True)
        _tier2 = re.compile(b.text()), {k: v + 1 for k, v in b.at.items()}  # match.group numbers
    return _tier2
