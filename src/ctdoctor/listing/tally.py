"""What one read of one or more listings gave: ``Feeder`` (the aggregators of several queries
fed from one read), ``Tally`` (an aggregator plus line facts) and ``StreamTally`` (whole lines
of a stream's chunks to a feeder, the noise removed, line numbers kept).

Pure: bytes in, tallies out; ``ctdoctor.sources.listing_files`` opens and reads the listings.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ctdoctor.errors import InputError
from ctdoctor.listing.aggregate import AggArgs, Aggregator, PyAggregator
from ctdoctor.listing.formats import XML_REFUSED, Format, NoiseRepair, is_xml_text, may_be_noise, sniff
from ctdoctor.listing.pyscan import ChunkScanner

if TYPE_CHECKING:
    from ctdoctor.listing.entry import Entry

# decodes a ctnetlink receive buffer: (entries, malformed messages, NLMSG_DONE seen)
Decoder = Callable[[Any], tuple[list["Entry"], int, bool]]
MAX_LINE = 64 << 20


class QueryLike(Protocol):
    """What a tally needs of a query (``top.query.Query`` is one): its aggregator's arguments, and
    a new aggregator for it."""

    def args(self) -> AggArgs: ...
    def aggregator(self, force_python: bool = False) -> Aggregator: ...


class Tally:
    """What one or more listings gave: an aggregator plus line facts."""

    def __init__(self, query: QueryLike, agg: Aggregator | None = None, lines: int = 0, unreadable: int = 0,
                 first_bad: tuple[int, str] | None = None):
        self.query = query
        self.agg = agg
        self.lines = lines
        self.unreadable = unreadable  # lines that were not an entry (skipped and counted)
        self.first_bad = first_bad  # (line number, text) of the first of them

    @property
    def total(self) -> int:
        return self.agg.total if self.agg is not None else 0

    @property
    def matched(self) -> int:
        return self.agg.matched if self.agg is not None else 0

    @property
    def accounting(self) -> bool:
        """The entries carry packets/bytes counters (nf_conntrack_acct): rows show their sums."""
        return self.agg is not None and bool(self.agg.accounting)

    def note_bad(self, count: int, line_no: int, text: bytes) -> None:
        self.unreadable += count
        if count and self.first_bad is None:
            self.first_bad = (line_no, text.decode("utf-8", "replace").strip()[:80])

    def check(self) -> Tally:
        """Reject a listing most of whose lines are not entries; a few bad lines are only counted."""
        if self.unreadable and self.unreadable * 2 > self.total + self.unreadable:
            n, text = self.first_bad or (0, "")
            if is_xml_text(text):
                raise InputError(XML_REFUSED)
            raise InputError(f"line {n}: not a conntrack entry: {text!r} ({self.unreadable} of "
                             f"{self.total + self.unreadable} lines unreadable: not a conntrack listing)")
        return self

    def merge(self, other: Tally, prefix: bytes = b"") -> None:
        self.unreadable += other.unreadable
        if self.first_bad is None:
            self.first_bad = other.first_bad
        if other.agg is None:
            return
        py = isinstance(other.agg, PyAggregator) or isinstance(self.agg, PyAggregator)
        if self.agg is None and not prefix:
            self.agg = other.agg  # adopt it: no copy
            self.lines += other.lines
            return
        if self.agg is None:
            self.agg = self.query.aggregator(force_python=py)
        elif py and not isinstance(self.agg, PyAggregator):
            # one listing needed the Python parser (save format): continue in Python
            converted = self.query.aggregator(force_python=True)
            converted.merge(self.agg)
            self.agg = converted
        self.agg.merge(other.agg, prefix)
        self.lines += other.lines


class Feeder:
    """The aggregators of one or more queries, fed together from one read: C ones take each
    parsed line in turn (``feed_many``), Python ones share one regex pass (``ChunkScanner``).
    ``decode``: how the pure-Python path decodes ctnetlink messages (``feed_netlink``)."""

    def __init__(self, queries: Sequence[QueryLike], force_python: bool = False, decode: Decoder | None = None):
        self.queries = list(queries)
        self.decode = decode
        self.aggs: list[Any] = [q.aggregator(force_python) for q in queries]
        self.python = isinstance(self.aggs[0], PyAggregator)
        self.scanner: ChunkScanner | None = None
        if self.python and len(self.aggs) > 1:
            self.scanner = ChunkScanner(self.aggs)
            for a in self.aggs:
                a.scanner = self.scanner

    def to_python(self) -> None:
        """Start over with Python aggregators (a save-format listing: only Python reads it)."""
        if not self.python:
            self.__init__(self.queries, True, self.decode)  # type: ignore[misc]

    def feed(self, buf: Any, skip_first_bad: bool = False) -> tuple[int, int, int]:
        a = self.aggs[0]
        if len(self.aggs) == 1:
            got: tuple[int, int, int] = a.feed(buf, skip_first_bad)
            return got
        if self.scanner is not None:
            return self.scanner.feed(buf, skip_first_bad)
        from ctdoctor.listing._fastscan import feed_many  # optional: absent without a compiler

        return feed_many(tuple(self.aggs), buf, skip_first_bad)

    def feed_netlink(self, buf: Any) -> tuple[int, int, bool]:
        """A ctnetlink receive buffer (dump or events): (entries, malformed messages, done)."""
        if not self.python:
            from ctdoctor.listing._fastscan import netlink_feed  # optional: absent without a compiler

            return netlink_feed(tuple(self.aggs), buf)
        if self.decode is None:
            raise TypeError("a pure-Python feeder of ctnetlink messages needs a decoder")
        from ctdoctor.listing.entry import entry_fields  # Entry's dataclasses: start-up most reads skip

        entries, malformed, done = self.decode(buf)
        fields = [entry_fields(e) for e in entries]
        for a in self.aggs:
            for f in fields:
                a.take(f, 1)
        return len(fields), malformed, done

    @property
    def binary_line(self) -> int:
        return int(self.aggs[0].binary_line)

    @property
    def noise(self) -> bool:
        return any(a.noise for a in self.aggs)

    def tallies(self, lines: int, bad: int, first_bad: tuple[int, str] | None) -> list[Tally]:
        return [Tally(q, a, lines, bad, first_bad) for q, a in zip(self.queries, self.aggs, strict=True)]


def line_text(buf: bytes | bytearray, n: int) -> bytes:
    """Line n (from 1) of a buffer, for a message."""
    pos = 0
    for _ in range(n - 1):
        pos = buf.find(b"\n", pos) + 1
        if pos == 0:
            return b""
    end = buf.find(b"\n", pos)
    return bytes(buf[pos:end if end >= 0 else len(buf)])


def binary_error(line_no: int) -> InputError:
    return InputError(f"line {line_no}: binary data, not a conntrack listing")


class StreamTally:
    """Whole lines of a stream's chunks to the feeder, the partial last line joined with the next
    chunk's first; line numbers and unreadable lines. ``clean_noise``: the stream may hold
    conntrack-tools' stderr (a saved file, stdin; never the kernel's own listing)."""

    def __init__(self, feeder: Feeder, skip_first_partial: bool, clean_noise: bool):
        self.feeder = feeder
        self.skip = skip_first_partial
        self.noise = NoiseRepair() if clean_noise else None
        self.save_format: bool | None = None
        self.line_base = self.bad = 0
        self.first_bad: tuple[int, str] | None = None

    def chunk(self, buf: bytearray, n: int, carry: bytes) -> bytes:
        """Feed the whole lines of buf[:n] (after ``carry``, the previous partial line); returns
        the new partial line."""
        start = 0
        if carry:
            nl = buf.find(b"\n", 0, n)
            if nl < 0:
                carry += bytes(buf[:n])
                if len(carry) > MAX_LINE:
                    raise InputError("listing has a line longer than 64 MiB: not a conntrack listing")
                return carry
            head = carry + bytes(buf[:nl + 1])
            self.lines(head, 0, len(head))
            start = nl + 1
        last = buf.rfind(b"\n", start, n)
        if last < start:
            return bytes(buf[start:n])
        self.lines(buf, start, last + 1)
        return bytes(buf[last + 1:n])

    def lines(self, buf: bytes | bytearray, start: int, end: int) -> None:
        """The whole lines of buf[start:end] into the feeder (fed as a view: no copy)."""
        if self.noise is not None and (self.noise.carry or may_be_noise(buf, start, end)):
            buf = self.noise.clean(bytes(buf[start:end]))
            start, end = 0, len(buf)
        if self.save_format is None:
            self.save_format = sniff(bytes(buf[start:start + 64])) is Format.SAVE
            if self.save_format:
                self.feeder.to_python()
        first = self.line_base == 0 and self.skip
        with memoryview(buf) as view:
            lines, nbad, fb = self.feeder.feed(view[start:end], first)
        if self.feeder.binary_line:
            raise binary_error(self.line_base + self.feeder.binary_line)
        if nbad:
            self.bad += nbad
            if self.first_bad is None:
                text = line_text(bytes(buf[start:end]), fb)
                self.first_bad = (self.line_base + fb, text.decode("utf-8", "replace").strip()[:80])
        self.line_base += lines

    def tallies(self) -> list[Tally]:
        return [t.check() for t in self.feeder.tallies(self.line_base, self.bad, self.first_bad)]


class no_gc:
    """No cyclic garbage collection while a listing is read: the tables are many small lists and
    dicts without cycles, and the collector would walk them again and again as they grow."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()
