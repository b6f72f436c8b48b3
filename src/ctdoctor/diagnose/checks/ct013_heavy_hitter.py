"""One source, destination or port holding a large share of the table.

What it detects
    In a table of at least 1000 listed entries, a single original source
    address, destination address or destination port with ≥ 30 % of the
    entries: a warning when the table is under pressure (at the warning fill,
    or dropping), information otherwise.

Why it matters
    One client in a retry loop, one scanner, one service answered by many
    short connections can fill a table sized for everybody; raising the max
    then only postpones the next outage.

How to fix
    Look at the culprit with ``ctdoctor top --by src,dport --src ADDR``; fix the
    client, rate-limit it (``nft ... ct count over N drop`` per source), or, for
    a legitimate high-volume service, NOTRACK it (``ctdoctor notrack --port P``)
    or size the table for it.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import (
    INFO,
    WARNING,
    Context,
    Finding,
    ListingSummary,
    Needs,
    Unknown,
    ev,
)

CODE = "CT013"
TITLE = "one source, destination or port holds a large share of the table"


def needs(ctx: Context) -> Needs:
    return Needs(listings={st.name for st in ctx.namespaces if ctx.listing_matters(st, 1000)})


def run(ctx: Context) -> Iterator[Finding | Unknown]:
    for st in ctx.namespaces:
        if not ctx.listing_matters(st, 1000):
            continue
        s = ctx.summary(st)
        if s is None:
            if st.count and st.count >= 1000:
                yield Unknown(CODE, "not enough data: " + ctx.summary_missing_reason(st), st.name)
            continue
        if s.listed < 1000:
            continue
        busy = ctx.under_pressure(st)
        for key in ("src", "dst", "dport"):
            top = s.top.get(key) or []
            if not top:
                continue
            value, n = top[0]
            share = n / s.listed
            if share < 0.3 or not value:
                continue
            flag = {"src": "--src", "dst": "--dst", "dport": "--port"}[key]
            # the exporter's refresh counts sources and destinations of a big table on a sample
            about = "about " if s.top_every > 1 and key != "dport" else ""
            evidence = {"key": key, "value": value, "entries": n, "listed": ev(s.listed, s.source),
                        "share": round(share, 3), "next": top[1:4], "fill": st.fill}
            if about:
                evidence["sampled"] = f"1 entry in {s.top_every}"
            yield Finding(
                CODE, WARNING if busy else INFO, TITLE, netns=st.name,
                summary=f"netns {st.label}: {key} {value} holds {about}{n} of {s.listed} entries "
                        f"({share * 100:.0f}%)",
                evidence=evidence,
                explanation="One " + {"src": "client", "dst": "destination", "dport": "service port"}[key]
                            + " accounts for a large part of the table; if it misbehaves, everybody's new "
                              "connections fail.",
                fix=[f"ctdoctor top --netns {st.name} {flag} {value} --by src,dst,dport",
                     f"nft add rule inet filter input {'ip6' if ':' in value else 'ip'} saddr {value} "
                     "ct count over 1000 drop   # example cap"
                     if key == "src" else f"ctdoctor notrack --port {value} --proto {_proto_of(s)}   # if it needs no state"
                     if key == "dport" else f"ctdoctor top --netns {st.name} --dst {value} --by src"],
            )


def _proto_of(s: ListingSummary) -> str:
    """The protocol of the table's traffic, for a NOTRACK suggestion: tcp or udp when nine entries in ten
    are of it, else both."""
    listed = sum(s.protos.values()) or 1
    for p in ("udp", "tcp"):
        if s.protos.get(p, 0) >= 0.9 * listed:
            return p
    return "both"
