"""Sockets and conntrack entries tell different stories.

What it detects
    - A full table (≥ 95 %) while ``ss`` shows ESTABLISHED sockets in that
      namespace: informational, it explains the classic confusion.
    - Many more ESTABLISHED TCP sockets than conntrack ESTABLISHED entries
      (each local connection has two sockets on loopback, one otherwise) in a
      namespace with NOTRACK rules: connections conntrack does not track,
      informational.

Why it matters
    Sockets are not conntrack entries. With a full table, existing
    connections keep their entries and keep working, so ``ss`` looks healthy
    while every *new* connection fails: "ss shows ESTABLISHED" does not mean
    the table is fine. Untracked connections are not in the table at all:
    they cannot be seen with ``conntrack -L`` and are not limited by it, but
    a stateful filter must accept ``ct state untracked`` for them (CT016).

How to fix
    For a full table, see CT001/CT002. For untracked traffic nothing is wrong
    by itself; check that the filter rules accept it.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import INFO, Context, Finding, Needs, NetnsState, ev

CODE = "CT014"
TITLE = "sockets vs conntrack"


def _told(st: NetnsState) -> bool:
    """Whether a story can be told: a full table, or a NOTRACK rule (ss is not run for nothing)."""
    full = st.fill is not None and st.fill >= 0.95
    return full or bool(st.rules.notrack)


def needs(ctx: Context) -> Needs:
    """The socket count where a story can be told; the listing where there are enough sockets to compare."""
    out = Needs(sockets={st.name for st in ctx.namespaces if _told(st)})
    for st in ctx.namespaces:
        if st.name in out.sockets:
            socks = ctx.established_sockets(st)
            if socks is not None and st.count is not None and socks >= 20 and \
                    not (st.fill is not None and st.fill >= 0.95):
                out.listings.add(st.name)
    return out


def run(ctx: Context) -> Iterator[Finding]:
    for st in ctx.namespaces:
        if not _told(st):
            continue
        socks = ctx.established_sockets(st)
        if socks is None or st.count is None:
            continue
        if st.fill is not None and st.fill >= 0.95 and socks > 0:
            yield Finding(
                CODE, INFO, "ESTABLISHED sockets with a full table are expected", netns=st.name,
                summary=f"netns {st.label}: {socks} ESTABLISHED sockets while the table is "
                        f"{st.fill * 100:.0f}% full: existing connections work, new ones fail",
                evidence={"established_sockets": ev(socks, ctx.sockets_source(st)),
                          "count": st.count, "max": st.max},
                explanation="Sockets are not conntrack entries. Established connections already have an entry and "
                            "keep working; only new connections need a free entry, and those are dropped.",
                fix=[f"ctdoctor doctor --only CT001,CT002 --netns {st.name}"],
            )
            continue
        s = ctx.summary(st) if socks >= 20 else None
        if s is None or s.sample:
            continue
        est = s.states.get("ESTABLISHED", 0)
        if socks > 4 * max(est, 1) and socks - 2 * est >= 20:
            yield Finding(
                CODE, INFO, "connections that conntrack does not track", netns=st.name,
                summary=f"netns {st.label}: {socks} ESTABLISHED sockets but {est} ESTABLISHED conntrack entries",
                evidence={"established_sockets": ev(socks, ctx.sockets_source(st)),
                          "established_entries": ev(est, s.source)},
                explanation="Most established connections have no conntrack entry: they are NOTRACKed (raw table "
                            "rules) or the namespace has no rule that uses conntrack. They do not fill the table, "
                            "but a stateful filter must accept untracked packets.",
                fix=["ctdoctor doctor --only CT016", "nft list ruleset | grep -n notrack"],
            )
