"""The facts builder: everything the checks need beyond the Snapshot, gathered before they run.

``HostFacts`` reads through ``sources.hostfacts`` (the listing's state mix and top keys, ESTABLISHED
socket counts, event listeners, the distribution, the expectation table) and keeps the answers as
a plain ``Facts``. ``gather`` asks each enabled check what it needs (its ``needs(ctx)``) and reads
exactly that, the listings several at a time; the checks then run on a ``Context`` that holds only
the plain Snapshot and Facts: no view, no root, no open file.

``context()`` gives the commands (plan, the exporter's refresh) a ``Gathering``: a Context that reads
a fact the first time it is asked for. Only the expected read failures (a missing file, no
permission, a netns gone, ctnetlink refused) become "not enough data", with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType

from ctdoctor.diagnose import checks
from ctdoctor.diagnose.checks.base import Context, Needs
from ctdoctor.diagnose.plan import pick_max
from ctdoctor.model.snapshot import Facts, Listener, ListingSummary, NetnsState, Snapshot
from ctdoctor.sources import hostfacts
from ctdoctor.sources.hostfacts import SAMPLE_ABOVE, SAMPLE_SIZE, TUNNEL_PORTS
from ctdoctor.sources.hostroot import HostRoot

__all__ = ["SAMPLE_ABOVE", "SAMPLE_SIZE", "TUNNEL_PORTS", "Gathering", "HostFacts", "context", "gather"]

Progress = Callable[[str], None]


class HostFacts:
    """Reads facts from the host image or the live host, once each, into ``self.facts`` (plain data)."""

    def __init__(self, snap: Snapshot, root: HostRoot | None = None, live: bool = False,
                 prefer_netlink: bool = False, frugal: bool = False, progress: Progress | None = None):
        self.snap = snap
        self.root = root
        self.live = live
        # the exporter's refresh reads live listings over ctnetlink (C decoder) before /proc
        self.prefer_netlink = prefer_netlink and live
        # the exporter's refresh spends the least CPU and memory: a big table's top sources and
        # destinations are counted on a sample (it publishes no address), a dump is read in one thread
        self.frugal = frugal
        self.progress = progress
        self.facts = Facts(live=live)
        self._host_read = False

    # ---- one fact each, read the first time -------------------------------------------------

    def summary(self, st: NetnsState) -> ListingSummary | None:
        got = self.facts.summaries
        if st.name not in got:
            try:
                got[st.name] = hostfacts.listing_summary(st, self.snap.notes, self.live, self.prefer_netlink,
                                                         self.frugal)
            except hostfacts.EXPECTED as e:
                got[st.name] = None
                self.facts.summary_errors[st.name] = f"{type(e).__name__}: {e}"
        return got[st.name]

    def established_sockets(self, st: NetnsState) -> int | None:
        if st.name not in self.facts.sockets:
            n, src = hostfacts.established_sockets(st, self.live)
            self.facts.sockets[st.name], self.facts.socket_sources[st.name] = n, src
        return self.facts.sockets[st.name]

    def event_listeners(self, st: NetnsState) -> list[Listener]:
        if not self.live:
            return []
        if st.name not in self.facts.listeners:
            if self.progress is not None:  # it walks every process's open files
                self.progress(f"finding the conntrack event listeners of netns {st.name}")
            self.facts.listeners[st.name] = hostfacts.event_listeners(st, self.root)
        return self.facts.listeners[st.name]

    def host(self) -> Facts:
        """The host-wide facts (distribution, expectation table, Open vSwitch's dump): cheap, read once."""
        if not self._host_read:
            self._host_read = True
            self.facts.distro = hostfacts.distro(self.root, self.snap.persisted)
            self.facts.expectations = hostfacts.expectations(self.root)
            self.facts.ovs = hostfacts.ovs_conntrack(self.root, self.live)
        return self.facts

    def distro(self) -> str:
        return self.host().distro

    def summary_missing_reason(self, st: NetnsState) -> str:
        return self.facts.summary_missing_reason(st.name)

    def sockets_source(self, st: NetnsState) -> str:
        return self.facts.sockets_source(st.name)

    # ---- many at once --------------------------------------------------------------------------

    def warm(self, states: list[NetnsState]) -> None:
        """Read these namespaces' listings now, several at a time (the doctor does it while it waits for
        its second counter sample)."""
        todo = [st for st in states if st.name not in self.facts.summaries]
        if not todo:
            return
        total = len(todo)

        def one(item: tuple[int, NetnsState]) -> ListingSummary | None:
            i, st = item
            if self.progress is not None:
                self.progress(f"reading the listing of netns {st.name} ({i}/{total})")
            return self.summary(st)

        if len(todo) == 1:
            one((1, todo[0]))
            return
        # imported here: concurrent.futures (and logging) costs ~10 ms that one listing never needs
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(4, len(todo)), thread_name_prefix="ctdoctor-listing") as pool:
            list(pool.map(one, enumerate(todo, 1)))


class Gathering(Context):
    """A Context that reads each fact the first time it is asked for (through its HostFacts). What the
    commands get from ``context()``; the checks never see one (``gather`` hands them a plain Context)."""

    def __init__(self, snap: Snapshot, reader: HostFacts):
        super().__init__(snap, reader.facts)
        self.reader = reader

    def summary(self, st: NetnsState) -> ListingSummary | None:
        return self.reader.summary(st)

    def established_sockets(self, st: NetnsState) -> int | None:
        return self.reader.established_sockets(st)

    def event_listeners(self, st: NetnsState) -> list[Listener]:
        return self.reader.event_listeners(st)

    def distro(self) -> str:
        return self.reader.host().distro

    def ovs_conntrack(self) -> tuple[dict[str, int], str] | None:
        return self.reader.host().ovs

    def expectations(self) -> tuple[int | None, str | None]:
        return self.reader.host().expectations

    def plan_max(self) -> int:
        if self.facts.plan_max is None:
            self.facts.plan_max = pick_max(self)
        return self.facts.plan_max

    def prepare(self, codes: Iterable[str]) -> None:
        """Read what these checks need (listings several at a time), before they run."""
        mods = [checks.load(c) for c in codes]
        self.reader.host()
        needs = Needs()
        for mod in mods:
            needs = needs | _needs(mod, self)
        for st in self.snap.namespaces:
            if st.name in needs.sockets:
                self.established_sockets(st)
        self.reader.warm([st for st in self.snap.namespaces if st.name in needs.listings])
        later = Needs()  # what depends on the listings (a gap CT004 will report: its event listeners)
        for mod in mods:
            later = later | _needs(mod, self, "needs_after")
        for st in self.snap.namespaces:
            if st.name in later.listeners:
                self.event_listeners(st)
        if needs.plan_max or later.plan_max:
            self.plan_max()

    def plain(self) -> Context:
        """The checks' Context: the plain Snapshot and the Facts gathered so far."""
        return Context(self.snap.plain(), self.facts)


def _needs(mod: ModuleType, ctx: Context, name: str = "needs") -> Needs:
    fn = getattr(mod, name, None)
    return fn(ctx) if fn is not None else Needs()


def gather(ctx: Context, codes: Iterable[str]) -> Context:
    """A Context for these checks with every fact they need already read (a plain Context as it is)."""
    if isinstance(ctx, Gathering):
        ctx.prepare(codes)
        return ctx.plain()
    return ctx


def context(snap: Snapshot, root: HostRoot | None = None, live: bool = False, prefer_netlink: bool = False,
            frugal: bool = False, progress: Progress | None = None) -> Gathering:
    """A Context over this snapshot whose facts are read from ``root`` when first asked for."""
    return Gathering(snap, HostFacts(snap, root, live, prefer_netlink, frugal, progress))
