"""What a saved listing may be besides the kernel's lines, told once: its format (gzip, ``conntrack
-o save``, ``-o xml``) and conntrack-tools' or sysctl's stderr that sosreport merged into it
(the "noise"), removed here and nowhere else.

Pure: bytes or text in; the files are opened by ``ctdoctor.sources``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from enum import Enum

# ---- the format -------------------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"


class Format(Enum):
    """What the first bytes of a saved listing say it is."""

    LISTING = "listing"  # /proc/net/nf_conntrack or conntrack -L [-o extended|id|ktimestamp]
    SAVE = "save"  # conntrack -L -o save: "-A -t 29 -u ... -s ..."
    XML = "xml"  # conntrack -L -o xml: not read
    GZIP = "gzip"  # compressed: decompress, then sniff again


def sniff(head: bytes) -> Format:
    """The format of a listing that starts with ``head`` (a few dozen bytes are enough)."""
    if head[:2] == GZIP_MAGIC:
        return Format.GZIP
    start = bytes(head[:64]).lstrip()
    if is_save_line(start):
        return Format.SAVE
    if is_xml_text(start):
        return Format.XML
    return Format.LISTING


def is_save_line(line: bytes) -> bool:
    """A ``conntrack -o save`` line (``-A ...``), not the kernel's format."""
    return line[:3] in (b"-A ", b"-I ")


def is_xml_text(text: bytes | str) -> bool:
    """Text of ``conntrack -L -o xml``."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return text.startswith(("<?xml", "<conntrack", "<flow"))


# the first line of a listing ``ctdoctor collect`` cut to a sample (readers skip it, as sosreport's cut line)
SAMPLE_MARK = b"# ctdoctor: a sample:"


def is_sample(head: bytes) -> bool:
    """A listing ``collect`` cut (it starts with SAMPLE_MARK)."""
    return head[:len(SAMPLE_MARK)] == SAMPLE_MARK


XML_REFUSED = ("an XML listing (conntrack -L -o xml) is not read: save the table with "
               "`conntrack -L -o extended` (or copy /proc/net/nf_conntrack) and read that")

# ---- the noise ---------------------------------------------------------------------------------

# stderr that conntrack-tools and sysctl write, merged into sosreport captures
NOISE_RE = re.compile(
    r"conntrack v[\d.]+ \(conntrack-tools\): \d+ (?:flow|expectation) entries have been shown\.|"
    r"nfct_labelmap_new: [^\n]*$"
)
_MARKS = (b"(conntrack-tools)", b"nfct_labelmap")
# conntrack-tools' last line (on stderr; sosreport merges it, sometimes into an entry line): version, entries
FOOTER = re.compile(r"conntrack v(\d+)\.(\d+)\.(\d+) \(conntrack-tools\): (\d+) flow entries have been shown")


def is_noise(line: bytes) -> bool:
    """Does this (unreadable) line hold conntrack-tools' or sysctl's stderr?"""
    return _MARKS[0] in line or _MARKS[1] in line


def may_be_noise(buf: bytes | bytearray, start: int = 0, end: int | None = None) -> bool:
    """Could buf[start:end] hold conntrack-tools' stderr? One memchr each for a character the
    noise has and listings rarely do ('(' of "(conntrack-tools)", 'w' of "nfct_labelmap_new",
    which only the "unknown" protocol name has besides) before the slower substring searches."""
    end = len(buf) if end is None else end
    return ((buf.find(b"(", start, end) >= 0 and buf.find(_MARKS[0], start, end) >= 0)
            or (buf.find(b"w", start, end) >= 0 and buf.find(_MARKS[1], start, end) >= 0))


def _without_noise(line: str) -> str:
    return NOISE_RE.sub("", line)


class NoiseRepair:
    """Removes the noise from chunks of whole lines, rejoining an entry split by it (the rest of
    the entry is on the next line); keeps line numbers (a removed line becomes empty)."""

    def __init__(self) -> None:
        self.carry = b""

    def clean(self, chunk: bytes) -> bytes:
        if self.carry:
            nl = chunk.find(b"\n")
            head = chunk if nl < 0 else chunk[:nl]
            chunk = self.carry + head + b"\n" + (b"" if nl < 0 else chunk[nl:])
            self.carry = b""
        if not may_be_noise(chunk):
            return chunk
        out = []
        lines = chunk.split(b"\n")
        i = 0
        while i < len(lines):
            ln = lines[i]
            if is_noise(ln):
                cleaned = _without_noise(ln.decode("utf-8", "replace")).encode()
                if cleaned.strip():
                    if i + 1 < len(lines):
                        out.append(cleaned + lines[i + 1])
                        out.append(b"")
                        i += 2
                        continue
                    self.carry = cleaned  # the continuation is in the next chunk
                    i += 1
                    continue
                out.append(b"")
            else:
                out.append(ln)
            i += 1
        return b"\n".join(out)


def repair_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number in the file, line) without the noise: a noise line is dropped, an entry it
    split in two is rejoined (under the number of its second part)."""
    carry = ""
    n = 0
    for n, raw in enumerate(lines, 1):
        if "(conntrack-tools)" in raw or "nfct_labelmap_new" in raw:
            cleaned = _without_noise(raw)
            if cleaned.strip():
                carry = cleaned  # the noise sat in the middle of an entry: the rest is on the next line
            continue
        ln = carry + raw if carry else raw
        carry = ""
        yield n, ln
    if carry.strip():
        yield n, carry
