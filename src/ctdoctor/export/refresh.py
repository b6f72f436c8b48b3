"""The exporter's background refresh: the doctor's findings and each netns's state mix.

It reads every listing over ctnetlink (C decoder), which on a 262,144-entry table
takes a fraction of a second and some memory. So it runs as its own process
(``python -m ctdoctor.export.refresh``, JSON on stdout): the scrapes served
meanwhile never wait for it, and whatever it allocated is returned to the
system when it exits, so the exporter's memory stays flat over days.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ctdoctor.export.metrics import Refreshed


def refresh(wanted: str) -> dict:
    """Run the doctor over the live host and tally each selected netns's listing by proto and state
    (the host's, and those holding 100 entries or more)."""
    from ctdoctor import doctor, snapshot
    from ctdoctor.facts import context
    from ctdoctor.sources.hostroot import HostRoot

    root = HostRoot.live()
    snap = snapshot.build(root, wanted, interval=None)
    ctx = context(snap, root, live=True, prefer_netlink=True)  # the C decoder, no kernel text formatting
    findings, _unknown = doctor.run_checks(ctx)
    by_state: dict[str, list] = {}
    listing_error: dict[str, str] = {}
    for st in snap.namespaces:
        if not ctx.listing_matters(st):
            # fewer than 100 entries: no state breakdown. Every listing walks the one hash table all
            # namespaces share (a dump of a 10-entry netns costs as much as the biggest table), so a node
            # with hundreds of small pods pays it only for the tables that matter
            continue
        summ = ctx.summary(st)
        if summ is None:
            listing_error[st.name] = ctx.summary_missing_reason(st)
            continue
        by_state[st.name] = sorted([p, s, n] for (p, s), n in summ.proto_states.items())
    return {"by_state": by_state, "listing_error": listing_error,
            "findings": [[f.id, f.severity, f.netns or "init"] for f in findings]}


def run_child(wanted: str, timeout: float) -> Refreshed:
    """Run one refresh in a child process; a failure is reported in the result, never raised."""
    t0 = time.time()
    argv = [sys.executable, "-m", "ctdoctor.export.refresh", wanted]
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Refreshed(duration=time.time() - t0, error=f"the refresh took longer than {timeout:g} s")
    except OSError as e:
        return Refreshed(duration=time.time() - t0, error=f"could not start the refresh: {e}")
    took = time.time() - t0
    if p.returncode != 0:
        msg = (p.stderr.decode("utf-8", "replace").strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return Refreshed(duration=took, error=msg[:300])
    try:
        doc = json.loads(p.stdout)
        return Refreshed(at=time.time(), duration=took, ok=True,
                         by_state={k: [(str(a), str(b), int(c)) for a, b, c in v] for k, v in doc["by_state"].items()},
                         listing_error={str(k): str(v) for k, v in doc["listing_error"].items()},
                         findings=[(str(a), str(b), str(c)) for a, b, c in doc["findings"]])
    except (ValueError, KeyError, TypeError) as e:
        return Refreshed(duration=took, error=f"unreadable refresh output: {e}")


def main(argv: list[str]) -> int:
    from ctdoctor.errors import CtdError

    wanted = argv[0] if argv else "all"
    try:
        doc = refresh(wanted)
    except CtdError as e:
        print(f"ctdoctor refresh: {e}", file=sys.stderr)
        return 1
    json.dump(doc, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
