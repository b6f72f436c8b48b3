"""State anomalies in the table.

What it detects
    In a table of at least 100 listed entries: SYN_SENT ≥ 10 % of the entries
    (connection attempts nobody answers), other unreplied entries ≥ 30 %
    (SYN_SENT ones are reported once, as SYN_SENT), TIME_WAIT ≥ 50 %.
    Information, unless the table is under pressure (at the warning fill, or
    dropping): TIME_WAIT above half of a near-empty table is normal on a busy
    server.

Why it matters
    - Many SYN_SENT: a dead backend, a firewall dropping the answers, a port
      scan or a SYN flood; each lingers 120 s.
    - Many unreplied: one-way traffic (UDP to dead servers, DNS timeouts,
      scans); these are what early drop evicts first (CT003).
    - TIME_WAIT dominating: many short connections (health checks, clients
      without keep-alive); each entry outlives its connection by 120 s.

How to fix
    Find who: ``ctdoctor top --state SYN_SENT --by dst,dport`` (or
    ``--state UNREPLIED``, ``--state TIME_WAIT --by src``). Fix the dead backend
    or the client without keep-alive; lower the matching timeout (CT011).
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import INFO, WARNING, Context, Finding, Needs, Unknown, ev

CODE = "CT012"
TITLE = "state anomalies: SYN_SENT, UNREPLIED or TIME_WAIT pile-up"


def needs(ctx: Context) -> Needs:
    return Needs(listings={st.name for st in ctx.namespaces if ctx.listing_matters(st)})


def run(ctx: Context) -> Iterator[Finding | Unknown]:
    for st in ctx.namespaces:
        if not ctx.listing_matters(st):
            continue
        s = ctx.summary(st)
        if s is None:
            if st.count:
                yield Unknown(CODE, "not enough data: " + ctx.summary_missing_reason(st), st.name)
            continue
        if s.listed < 100:
            continue
        syn = s.states.get("SYN_SENT", 0)
        unrep = s.states.get("UNREPLIED", 0)  # SYN_SENT ones are unreplied too, but reported as SYN_SENT
        sev = WARNING if ctx.under_pressure(st) else INFO
        tw = s.states.get("TIME_WAIT", 0)
        checks = [("SYN_SENT", syn, 0.10, f"ctdoctor top --netns {st.name} --state SYN_SENT --by dst,dport"),
                  ("UNREPLIED", unrep, 0.30, f"ctdoctor top --netns {st.name} --state UNREPLIED --by src,dport"),
                  ("TIME_WAIT", tw, 0.50, f"ctdoctor top --netns {st.name} --state TIME_WAIT --by src,dport")]
        for label, n, limit, cmd in checks:
            share = n / s.listed
            if share < limit:
                continue
            yield Finding(
                CODE, sev, f"{label} pile-up", netns=st.name,
                summary=f"netns {st.label}: {n} of {s.listed} listed entries ({share * 100:.0f}%) are {label}"
                        + (" (a sample of the table)" if s.sample else ""),
                evidence={"state": label, "entries": n, "listed": ev(s.listed, s.source), "share": round(share, 3),
                          "state_mix": dict(list(s.states.items())[:8]), "sample": s.sample},
                explanation={"SYN_SENT": "Connection attempts get no answer: a dead backend, dropped replies, a "
                                         "scan or a SYN flood. Each entry stays 120 s.",
                             "UNREPLIED": "Flows never answered: one-way UDP, timeouts, scans. They are the first "
                                          "evicted when the table is full.",
                             "TIME_WAIT": "Many short connections: each leaves a TIME_WAIT entry for 120 s after it "
                                          "closed."}[label],
                fix=[cmd],
            )
