"""Reading listings off the machine or an image into tallies: saved files (plain, gzip, stdin)
split in ranges across threads or processes, live /proc streams and ctnetlink dumps read by a
thread of their own while the previous chunk is counted.

What is read is counted by ``ctdoctor.listing`` (bytes in, tallies out): this module only opens,
reads, forks and joins. The C aggregator (``ctdoctor.listing._fastscan``) releases the GIL,
so its ranges are read by threads; the pure-Python one holds it, so its ranges are read by
forked processes that send their tables back.
"""

from __future__ import annotations

import io
import itertools
import marshal
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from functools import partial
from typing import IO, Any, cast

from ctdoctor.errors import InputError
from ctdoctor.listing import canonical, pyscan
from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.aggregate import PyAggregator
from ctdoctor.listing.formats import GZIP_MAGIC, Format, sniff
from ctdoctor.listing.tally import (
    MAX_LINE,
    Feeder,
    QueryLike,
    StreamTally,
    Tally,
    binary_error,
    line_text,
    no_gc,
)

PROC_LISTING = "/proc/net/nf_conntrack"  # as the netns reading it sees it

CHUNK = 1 << 20
C_CHUNK = 4 << 20
PY_CHUNK = 256 << 10  # the regex's list of tuples stays in the caches (4 MiB chunks: a third slower)
Fill = Callable[[Any], int]


# ---- opening ------------------------------------------------------------------------------------


def open_listing(path: str) -> IO[bytes]:
    """Open a saved listing (plain or gzip, ``-`` for stdin) for streaming."""
    f: Any
    if path == "-":
        f = sys.stdin.buffer
    else:
        try:
            f = open(path, "rb")  # noqa: SIM115 - the caller's stream (open_listing returns it)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except PermissionError:
            raise InputError(f"{path}: permission denied") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a directory, not a listing") from None
    head = f.peek(2)[:2] if hasattr(f, "peek") else b""
    if sniff(head) is Format.GZIP:
        import gzip  # only for a compressed listing

        return cast(IO[bytes], gzip.open(f, "rb"))
    return cast(IO[bytes], f)


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_chunks(f: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """Chunks of whole lines from a binary stream (the last may lack its newline)."""
    rest = b""
    while True:
        try:
            data = f.read(size)
        except (OSError, EOFError) as e:
            raise InputError(f"listing is truncated or corrupt ({e})") from None
        if not data:
            break
        data = rest + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            if len(rest) > MAX_LINE:
                raise InputError("listing has a line longer than 64 MiB: not a conntrack listing")
            continue
        yield data[:cut]
        rest = data[cut:]
    if rest:
        yield rest


def iter_lines(f: IO[bytes], chunk: int = 1 << 20) -> Iterator[str]:
    """Decoded lines from a binary stream, read in chunks (memory stays flat)."""
    for data in read_chunks(f, chunk):
        lines = data.split(b"\n")  # on \n only: line numbers are the file's
        if lines[-1] == b"":
            lines.pop()
        for ln in lines:
            yield ln.decode("utf-8", "replace")


# ---- streams --------------------------------------------------------------------------------------


class Reader:
    """Reads a stream in a thread of its own into a few buffers used in turn, so the kernel's
    formatting of /proc/net/nf_conntrack (or a pipe, a gzip file) runs while the scanner reads
    the previous buffer, with no allocation or copy per chunk. Iterating gives (buffer, length);
    a buffer goes back to the reader when the next one is asked for.

    ``fill(buf)`` -> bytes read into buf, 0 at the end; ``last(buf, n)`` -> True when nothing
    comes after this buffer (a netlink dump's NLMSG_DONE: reading on would wait for ever)."""

    def __init__(self, fill: Fill, size: int = CHUNK, count: int = 3,
                 last: Callable[[bytearray, int], bool] | None = None):
        self.fill, self.last = fill, last
        self.free: queue.Queue[bytearray | None] = queue.Queue()
        self.full: queue.Queue[tuple[bytearray | None, int] | BaseException] = queue.Queue()
        for _ in range(count):
            self.free.put(bytearray(size))
        self.stop = self.started = False
        self.thread = threading.Thread(target=self._run, name="ctdoctor-reader", daemon=True)

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.thread.start()

    def close(self) -> None:
        """Stop a reader whose buffers will not be read (it returns when it next wants a free one)."""
        self.stop = True
        self.free.put(None)
        if self.started:
            self.thread.join(timeout=1)

    def _run(self) -> None:
        while True:
            buf = self.free.get()
            if buf is None or self.stop:
                return
            try:
                n = self.fill(buf) or 0
            except BaseException as e:  # the consumer raises it
                self.full.put(e)
                return
            self.full.put((buf, n))
            try:
                done = n == 0 or (self.last is not None and self.last(buf, n))
            except BaseException as e:  # a netlink error message (EPERM): the consumer raises it
                self.full.put(e)
                return
            if done:
                if n:
                    self.full.put((None, 0))
                return

    def __iter__(self) -> Iterator[tuple[bytearray, int]]:
        self.start()
        prev = None
        try:
            while True:
                if prev is not None:
                    self.free.put(prev)
                item = self.full.get()
                if isinstance(item, BaseException):
                    if isinstance(item, InputError):
                        raise item
                    if isinstance(item, (OSError, EOFError)):
                        raise InputError(f"listing is truncated or corrupt ({item})") from None
                    raise item
                buf, n = item
                if not n or buf is None:
                    return
                prev = buf
                yield buf, n
        finally:
            # a reader waiting for a free buffer sees None and returns; one blocked reading a pipe
            # stays (a daemon) until data comes
            self.close()


class StartedListing:
    """An unbuffered live listing whose reader thread (C ``read_full``, C-scanner-sized buffers) is
    already running: the kernel formats it while the caller does the rest of its setup. Read it
    once with ``tally_stream``; ``close()`` stops the reader and closes the file."""

    def __init__(self, stream: IO[bytes], inode: int | None = None):
        self.stream, self.inode = stream, inode
        # 8 MiB ahead: what the kernel formats of a big table while the setup runs (~50 ms)
        self.reader = Reader(filler(stream, python=False), size=CHUNK, count=8)
        self.reader.start()

    def close(self) -> None:
        self.reader.close()
        self.stream.close()

    def __enter__(self) -> StartedListing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def filler(f: Any, python: bool) -> Fill:
    """How the reader fills a buffer from f. An unbuffered file (a live /proc listing, which gives a
    page per read) is read until the buffer is full: by C ``read_full`` without the GIL, else in
    a loop."""
    if not isinstance(f, io.FileIO):
        readinto: Fill = f.readinto  # buffered: its readinto fills the buffer
        return readinto
    if not python and accelerated():
        from ctdoctor.listing._fastscan import read_full  # optional: absent without a compiler

        return partial(read_full, f.fileno())

    def fill(buf: bytearray) -> int:  # a raw file's readinto is one read(): one page of /proc
        got = 0
        with memoryview(buf) as view:
            while got < len(buf):
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
        return got

    return fill


def tally_stream_multi(f: Any, queries: Sequence[QueryLike], *, skip_first_partial: bool = False,
                       force_python: bool = False, clean_noise: bool = True) -> list[Tally]:
    """One read of the stream, several aggregations (the doctor's state mix and top keys).
    ``clean_noise``: the stream may hold conntrack-tools' stderr (a saved file, stdin; never
    the kernel's own listing)."""
    if getattr(f, "is_netlink_dump", False):
        return _tally_netlink(f, queries, force_python)
    st = StreamTally(Feeder(queries, force_python), skip_first_partial, clean_noise)
    carry = b""
    reader = f.reader if isinstance(f, StartedListing) else \
        Reader(filler(f, st.feeder.python), size=PY_CHUNK if st.feeder.python else CHUNK)
    with no_gc():
        for buf, n in reader:
            carry = st.chunk(buf, n, carry)
        if carry:
            st.lines(carry, 0, len(carry))  # the last line, without its newline
    return st.tallies()


def tally_stream(f: Any, query: QueryLike, *, skip_first_partial: bool = False, force_python: bool = False,
                 clean_noise: bool = True) -> Tally:
    """Aggregate a binary stream; a reader thread keeps the next chunk coming while this one is parsed."""
    return tally_stream_multi(f, [query], skip_first_partial=skip_first_partial, force_python=force_python,
                              clean_noise=clean_noise)[0]


def tally_path(path: str, query: QueryLike) -> Tally:
    """A saved listing named on the command line (``-`` for stdin): a plain file in ranges, a
    stream (stdin, gzip, a pipe) in one read."""
    if path != "-" and os.path.isfile(path) and not is_gzip(path):
        return tally_file(path, query)
    with open_listing(path) as f:
        return tally_stream(f, query)


# ---- ctnetlink dumps and events -------------------------------------------------------------------


def netlink_feeder(queries: Sequence[QueryLike], force_python: bool = False) -> Feeder:
    """A feeder of ctnetlink receive buffers (dumps, NEW events): decoded in C when built."""
    from ctdoctor.sources import ctnetlink  # the decoder: 25 ms of imports that a saved file does not need

    return Feeder(queries, force_python, decode=ctnetlink.decode_messages)


def _tally_netlink(dump: Any, queries: Sequence[QueryLike], force_python: bool) -> list[Tally]:
    """A ctnetlink dump straight into the aggregators, no listing text in between; the next
    receive buffer is read (the kernel dumps the next part) while this one is counted, unless the
    dump asks for the cheaper read in turn (``overlap`` False)."""
    from ctdoctor.sources import ctnetlink  # (see netlink_feeder)

    feeder = netlink_feeder(queries, force_python or not accelerated())
    entries = malformed = 0
    sock = dump.start()
    parts = Reader(sock.recv_into, size=1 << 20, last=ctnetlink.has_done) if getattr(dump, "overlap", True) \
        else _parts_in_turn(sock)
    try:
        with no_gc():
            for buf, n in parts:
                with memoryview(buf) as view:
                    k, bad, done = feeder.feed_netlink(view[:n])
                entries += k
                malformed += bad
                if done:
                    break
    except OSError as e:  # NLMSG_ERROR in the dump, or the socket failed
        raise ctnetlink.CtnetlinkError(f"ctnetlink dump failed: {e.strerror or e}") from None
    first_bad = (entries + 1, "a malformed ctnetlink message") if malformed else None
    return [t.check() for t in feeder.tallies(entries + malformed, malformed, first_bad)]


def _parts_in_turn(sock: Any) -> Iterator[tuple[bytearray, int]]:
    """A dump's receive buffers read in this thread, one after the other."""
    from ctdoctor.sources import ctnetlink  # (see netlink_feeder)

    buf = bytearray(1 << 20)
    while True:
        n = sock.recv_into(buf)
        yield buf, n
        if not n or ctnetlink.has_done(buf, n):
            return


# ---- a saved file in ranges -----------------------------------------------------------------------


class RangeEnd(Enum):
    """How a worker's range of a saved listing ended."""

    DONE = "done"
    BINARY = "binary"  # NUL bytes: not a listing
    NOISE = "noise"  # conntrack-tools stderr merged in: the whole file goes through the noise filter


Part = tuple[Tally, int, RangeEnd]  # a range's tally, its first binary line (or 0), how it ended


def tally_file(path: str, query: QueryLike, *, workers: int | None = None, force_python: bool = False) -> Tally:
    """Aggregate a plain file in ranges split at line boundaries, read side by side: one thread
    each with the C scanner (it and file reads release the GIL), one process each with the
    pure-Python one (the regex engine holds the GIL). The first range is read here."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4096)
    save = sniff(head) is Format.SAVE
    py = force_python or not accelerated()
    workers = workers or min(os.cpu_count() or 1, 8)
    if save or size < (8 << 20) or workers < 2:
        with open(path, "rb") as f:
            return tally_stream(f, query, force_python=py or save)
    if py:  # the first range is read here, and its table is merged with the others after: a bit less
        first = size * 19 // (20 * workers)
        bounds = [0] + [first + (size - first) * i // (workers - 1) for i in range(workers)]
    else:
        bounds = [size * i // workers for i in range(workers + 1)]
    ranges = list(itertools.pairwise(bounds))
    parts = _ranges_in_processes(path, ranges, query) if py else _ranges_in_threads(path, ranges, query)
    total = Tally(query)
    base = 0
    for tally, bin_line, kind in parts:
        if kind is RangeEnd.NOISE:
            with open(path, "rb") as f:
                return tally_stream(f, query, force_python=py)
        if kind is RangeEnd.BINARY:
            raise binary_error(base + bin_line)
        if tally.first_bad is not None:
            tally.first_bad = (base + tally.first_bad[0], tally.first_bad[1])
        total.merge(tally)
        base += tally.lines
    return total.check()


def _ranges_in_threads(path: str, ranges: list[tuple[int, int]], query: QueryLike) -> list[Part]:
    """The C scanner on each range in a thread of its own (reads and the scanner release the GIL)."""
    cuts = _line_starts(path, [s for s, _e in ranges] + [ranges[-1][1]])
    parts: list[Part | None] = [None] * len(ranges)

    def work(i: int) -> None:
        parts[i] = _tally_span(path, cuts[i], cuts[i + 1], query)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(ranges))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [p for p in parts if p is not None]


def _line_starts(path: str, bounds: list[int]) -> list[int]:
    """Where the lines that start in each [bounds[i], bounds[i+1]) begin: byte spans of whole lines."""
    cuts = [bounds[0]]
    with open(path, "rb") as f:
        for b in bounds[1:-1]:
            f.seek(b - 1)
            cuts.append(max(b - 1 + len(f.readline()), cuts[-1]))  # after the newline at or past b - 1
    cuts.append(max(bounds[-1], cuts[-1]))
    return cuts


def _tally_span(path: str, start: int, end: int, query: QueryLike, force_python: bool = False) -> Part:
    """The whole lines in bytes [start, end) of a file: read into one buffer, used again for
    every chunk (a new buffer per read costs a page fault per 4 KiB), and fed as views of it."""
    feeder = Feeder([query], force_python)
    tally = Tally(query, None)
    buf = bytearray(PY_CHUNK if feeder.python else C_CHUNK)
    lines = have = 0
    with open(path, "rb", buffering=0) as f, no_gc():
        f.seek(start)
        left = end - start
        while left > 0 or have:
            with memoryview(buf) as view:
                n = f.readinto(view[have:have + min(len(buf) - have, left)]) if left > 0 else 0
            n = n or 0
            if left > 0 and n == 0:
                left = 0  # the file got shorter: read what is there
            left -= n
            have += n
            cut = have if left <= 0 else buf.rfind(b"\n", 0, have) + 1
            if cut == 0:  # no newline in a full buffer: one line longer than it
                if len(buf) >= MAX_LINE:
                    raise InputError("listing has a line longer than 64 MiB: not a conntrack listing")
                buf.extend(bytes(len(buf)))
                continue
            with memoryview(buf) as view:
                k, nbad, fb = feeder.feed(view[:cut], False)
            if nbad and not feeder.binary_line:
                tally.note_bad(nbad, lines + fb, line_text(buf, fb) if tally.first_bad is None else b"")
            if feeder.binary_line:
                return tally, lines + feeder.binary_line, RangeEnd.BINARY
            if feeder.noise:
                return tally, 0, RangeEnd.NOISE
            lines += k
            buf[:have - cut] = buf[cut:have]
            have -= cut
    tally.agg, tally.lines = feeder.aggs[0], lines
    return tally, 0, RangeEnd.DONE


def _child(path: str, start: int, end: int, query: QueryLike, w: int) -> None:
    """A forked reader of one range: sends its table (marshal: builtins only, the fastest to
    write and read) and never returns."""
    code = 0
    try:
        with no_gc():
            tally, bin_line, kind = _tally_span(path, start, end, query, True)
            agg = tally.agg
            table = agg.table() if isinstance(agg, PyAggregator) else None
            payload = marshal.dumps(("ok", tally.lines, tally.unreadable, tally.first_bad, bin_line,
                                     kind.value, table))
    except BaseException as ex:
        payload = marshal.dumps(("error", f"{type(ex).__name__}: {ex}"))
        code = 1
    try:
        with os.fdopen(w, "wb") as out:
            out.write(payload)
    finally:
        os._exit(code)


def _ranges_in_processes(path: str, ranges: list[tuple[int, int]], query: QueryLike) -> list[Part]:
    """The pure-Python scanner on every range but the first in a forked child each, the first
    here; each child sends back its table, which is small next to the text it read."""
    cuts = _line_starts(path, [s for s, _e in ranges] + [ranges[-1][1]])
    if threading.active_count() > 1:  # forking a threaded process is unsafe: read them in turn
        return [_tally_span(path, cuts[i], cuts[i + 1], query, True) for i in range(len(ranges))]
    canonical.grammar(pyscan.needs(PyAggregator(*query.args())))  # compiled once, before the forks
    children = []
    try:
        for i in range(1, len(ranges)):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: read the range, send the result, never return
                os.close(r)
                _child(path, cuts[i], cuts[i + 1], query, w)
            os.close(w)
            children.append((pid, r))
        parts = [_tally_span(path, cuts[0], cuts[1], query, True)]
        first = parts[0][0].agg
        if isinstance(first, PyAggregator):
            first.table()  # fold here while the children still read: not after, in the merge
        for _pid, r in children:
            with os.fdopen(r, "rb") as f:
                data = f.read()
            parts.append(_range_result(data, query))
        return parts
    finally:
        for pid, _r in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _range_result(data: bytes, query: QueryLike) -> Part:
    if not data:
        raise InputError("a reader process ended without a result (killed?)")
    with no_gc():
        got = marshal.loads(data)
    if got[0] != "ok":
        err = got[1]
        raise InputError(err.split(": ", 1)[1] if err.startswith("InputError: ") else f"reading failed: {err}")
    _, lines, unreadable, first_bad, bin_line, kind, table = got
    tally = Tally(query, None, lines, unreadable, tuple(first_bad) if first_bad else None)
    if table is not None:
        agg = PyAggregator(*query.args())
        agg.set_table(*table)
        agg.disposable = True  # nothing else holds its rows: a merge takes them over
        tally.agg = agg
    return tally, bin_line, RangeEnd(kind)
