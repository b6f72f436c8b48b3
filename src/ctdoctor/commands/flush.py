"""ctdoctor flush: delete entries by state, address or port, over ctnetlink — never ASSURED ESTABLISHED
ones unless asked, because deleting them breaks live connections under a stateful filter or NAT."""

from __future__ import annotations

import ipaddress
from typing import Any

from ctdoctor.commands.common import Needs, bounded, check_format
from ctdoctor.errors import UsageError
from ctdoctor.model.kernel import check_states
from ctdoctor.render.fmt import num
from ctdoctor.render.jsonout import emit
from ctdoctor.render.page import terminal_width
from ctdoctor.render.progress import Progress
from ctdoctor.render.wrap import prose
from ctdoctor.sources import netns as nsmod
from ctdoctor.write.flush import flush


def add_arguments(p: Any) -> None:
    p.add_argument("--state", required=True, metavar="S[,S]",
                   help="states to delete: TIME_WAIT, SYN_SENT, CLOSE, UNREPLIED, ... (ALL for any state)")
    p.add_argument("--src", metavar="CIDR", help="only entries from these sources")
    p.add_argument("--dst", metavar="CIDR", help="only entries to these destinations")
    p.add_argument("--port", type=bounded(int, 0, 65535), metavar="N", help="only entries whose original sport or dport is N")
    p.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    p.add_argument("--include-established", action="store_true",
                   help="also delete ASSURED ESTABLISHED entries (breaks live connections behind NAT/stateful rules)")


def requires(args: Any) -> Needs:
    return Needs(live=True, root=True, what="flush", why="CAP_NET_ADMIN to delete entries")


def _states(args: Any) -> set[str]:
    states = {s.strip().upper() for s in args.state.split(",") if s.strip()}
    if not states:
        raise UsageError("--state needs at least one state")
    check_states(sorted(states), extra=("ALL",))
    if "ESTABLISHED" in states and not args.include_established:
        raise UsageError("refusing to delete ESTABLISHED entries: their connections would break under NAT or a "
                         "stateful filter; add --include-established if that is what you want")
    for name in ("src", "dst"):
        v = getattr(args, name)
        for c in v.split(",") if v else []:
            try:
                ipaddress.ip_network(c.strip(), strict=False)
            except ValueError:
                raise UsageError(f"--{name} {v}: not an address or CIDR") from None
    return states


def run(args: Any) -> int:
    check_format(args, ("text", "json"))  # --format is refused where it does not apply, never ignored
    states = _states(args)
    wanted = getattr(args, "netns", None)
    if wanted == "all":
        raise UsageError("flush works on one netns at a time: name it with --netns")
    (ref,) = nsmod.select(nsmod.discover(), wanted)
    fmt = getattr(args, "format", "text")
    with Progress(fmt) as progress:  # on a terminal, for text, once it takes over a second
        doc = flush(ref, states, args.port, args.src, args.dst, args.include_established, args.dry_run,
                    progress=progress.step)
    if fmt == "json":
        emit(doc)
    else:
        _print(doc)
    return 0


def _print(doc: dict[str, Any]) -> None:
    width = terminal_width()
    before, protected, matched = num(doc["before"]), doc["protected_established"], num(doc["matched"])
    _say(f"netns {doc['netns']}: {before} entries before, {matched} matched"
         + (f", {num(protected)} ASSURED ESTABLISHED kept (use --include-established to delete them)"
            if protected else ""), width)
    if doc["dry_run"]:
        for row in doc["sample"]:
            _say(f"  would delete {num(row['count']):>9} {row['what']}", width, "      ")
        _say(f"dry run: nothing deleted ({matched} of {before} would be)", width)
    else:
        gone, after = doc["already_gone"], doc["after"]
        _say(f"deleted {num(doc['deleted'])}" + (f" ({num(gone)} were already gone)" if gone else "")
             + (f"; {num(after)} after" if after is not None else ""), width)


def _say(text: str, width: int, more: str = "  ") -> None:
    print("\n".join(prose(text, width, "", more)))
