"""The exporter's background refresh, in its worker process: the doctor's findings and each
netns's state mix.

It reads the listings that matter over ctnetlink (C decoder, one thread, a big table's
sources and destinations on a sample), which on a 262,144-entry table costs about 0.35 s of
kernel time and 25 MB. ``python -m ctdoctor.monitor.refresh_worker --serve`` is the process
``monitor.refresh.Worker`` keeps (a line in, a JSON line out); ``python -m
ctdoctor.monitor.refresh_worker [NETNS]`` runs one refresh and prints the same JSON.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
from typing import IO, Any

from ctdoctor.diagnose import doctor
from ctdoctor.diagnose.facts import context
from ctdoctor.errors import CtdError
from ctdoctor.sources import children, snapshot
from ctdoctor.sources.hostroot import HostRoot


def refresh(wanted: str, kernel_log: str | None = None) -> dict[str, Any]:
    """Run the doctor over the live host and tally each selected netns's listing by proto and state
    (the host's, and those holding 100 entries or more)."""
    root = HostRoot.live()
    snap = snapshot.build(root, wanted, interval=None, kernel_log=kernel_log)
    # the C decoder (no kernel text formatting), frugal: a big table's sources and destinations are
    # counted on a sample, a dump is read in one thread (no hand-over between threads per 32 KB)
    ctx = context(snap, root, live=True, prefer_netlink=True, frugal=True)
    findings, _unknown = doctor.run_checks(ctx)
    by_state: dict[str, list[list[Any]]] = {}
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


def _answer(wanted: str, kernel_log: str | None = None) -> dict[str, Any]:
    """One refresh as the worker answers it: the result or the error, and what it cost."""
    before = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    try:
        doc = refresh(wanted, kernel_log)
    except CtdError as e:
        doc = {"error": str(e)}
    except Exception as e:  # the worker keeps serving; the exporter shows the reason
        doc = {"error": f"internal error in the refresh: {type(e).__name__}: {e}"}
    after = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    doc["cpu_seconds"] = round(sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime
                                   for a, b in zip(after, before, strict=True)), 4)
    doc["rss_mb"], doc["peak_rss_mb"] = children.own_memory_mb()
    return doc


def serve(stdin: IO[str], stdout: IO[str]) -> int:
    """The worker's loop: a netns selection per line in, one JSON line out, until stdin closes."""
    for line in stdin:
        try:  # {"wanted": "all", "kernel_log": "..."}; a bare line is the netns selection
            req = json.loads(line) if line.lstrip().startswith("{") else {"wanted": line.strip()}
            wanted, klog = str(req.get("wanted") or "all"), req.get("kernel_log")
        except (ValueError, AttributeError):
            wanted, klog = "all", None
        json.dump(_answer(wanted, klog if isinstance(klog, str) else None), stdout)
        stdout.write("\n")
        stdout.flush()
        gc.collect()  # what this refresh built is garbage now: give it back before the next
    return 0


def main(argv: list[str]) -> int:
    """``--serve``: the exporter's worker; else one refresh of ``argv[0]`` (default all) as JSON."""
    if argv[:1] == ["--serve"]:
        return serve(sys.stdin, sys.stdout)
    doc = _answer(argv[0] if argv else "all")
    json.dump(doc, sys.stdout)
    if doc.get("error"):
        print(f"ctdoctor refresh: {doc['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
