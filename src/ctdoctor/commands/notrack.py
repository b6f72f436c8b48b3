"""ctdoctor notrack: raw-priority NOTRACK rules for a port, with the accept rules a stateful filter needs.

Direction ``in`` is a service on this host (clients connect to P): untrack
packets *to* P arriving (prerouting) and replies *from* P leaving (output).
``out`` is this host as a client of P elsewhere: untrack packets to P leaving
(output) and replies from P arriving (prerouting). Untracked packets have the
ct state ``untracked``; a filter that accepts only established traffic drops
them, so an accept for that state is emitted with them.

``--apply`` installs the nft rules in their own table ``inet ctdoctor_notrack``
(removed by ``--remove``). It never edits the user's chains on its own: it prints
the accept for each stateful input/output chain it finds, placed after that
chain's drop rules (above them, untracked traffic the user blocks would get
through). ``--accept-in FAMILY:TABLE:CHAIN`` (repeatable) names a chain to insert
it into there, tagged with the comment ``ctdoctor-notrack``.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from ctdoctor.commands.common import Needs, check_format
from ctdoctor.errors import UsageError
from ctdoctor.render.page import terminal_width
from ctdoctor.render.wrap import command, commented, prose
from ctdoctor.write import notrack


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", metavar="P[,P]", help="port(s) to untrack")
    p.add_argument("--proto", choices=("tcp", "udp", "both"), default=None,
                   help="the port's protocol; without it, the one its well-known service speaks, else both "
                        "(said on stderr)")
    p.add_argument("--direction", choices=("in", "out", "both"), default="in",
                   help="in: a service on this host; out: this host as a client; both")
    p.add_argument("--backend", choices=("nft", "iptables"), default="nft")
    p.add_argument("--apply", action="store_true", help="install the rules (nft backend)")
    p.add_argument("--remove", action="store_true", help="remove what --apply installed")
    p.add_argument("--accept-in", action="append", default=[], metavar="FAMILY:TABLE:CHAIN",
                   help="with --apply: also add the untracked accept to this chain of yours, after its drop "
                        "rules (repeatable; without it your chains are never touched)")


def ports_of(text: str | None) -> list[int]:
    if not text:
        raise UsageError("--port is required (e.g. --port 53 or --port 53,5353)")
    out = []
    for raw in text.split(","):
        part = raw.strip()
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise UsageError(f"--port {part}: not a port number")
        out.append(int(part))
    return out


# What a port's well-known service speaks, when --proto is not given (any other port: both)
PORT_PROTO = {53: "both", 67: "udp", 68: "udp", 69: "udp", 123: "udp", 161: "udp", 162: "udp", 514: "udp",
              1812: "udp", 1813: "udp", 4789: "udp", 5353: "udp", 6081: "udp", 8472: "udp", 51820: "udp",
              22: "tcp", 25: "tcp", 80: "tcp", 443: "tcp", 3306: "tcp", 5432: "tcp", 6379: "tcp", 6443: "tcp",
              8080: "tcp", 9090: "tcp", 11211: "both"}


def protos_for(ports: list[int], given: str | None) -> tuple[list[str], str]:
    """(the protocols to untrack, and what to tell the user when they were not given)."""
    if given:
        return (["tcp", "udp"] if given == "both" else [given]), ""
    seen = {PORT_PROTO.get(p, "both") for p in ports}
    choice = seen.pop() if len(seen) == 1 else "both"
    protos = ["tcp", "udp"] if choice == "both" else [choice]
    why = ", ".join(f"{p}: {PORT_PROTO[p]}" for p in ports if p in PORT_PROTO) or "no well-known service"
    return protos, (f"--proto not given: untracking {' and '.join(protos)} (port {why}); give --proto "
                    "tcp|udp|both to choose")


def parse_chain(text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"--accept-in {text}: use FAMILY:TABLE:CHAIN, e.g. inet:filter:input")
    return parts[0], parts[1], parts[2]


def requires(args: argparse.Namespace) -> Needs:
    if args.apply or args.remove:
        return Needs(live=True, root=True, what="notrack --apply" if args.apply else "notrack --remove",
                     why="CAP_NET_ADMIN to change the ruleset")
    return Needs()

def run(args: argparse.Namespace) -> int:
    check_format(args, ("text",))  # --format is refused where it does not apply, never ignored
    ns = getattr(args, "netns", None)
    ns_args = notrack.ns_args(ns)
    if ns == "all":
        raise UsageError("notrack works on one netns at a time")
    if args.remove:
        had, removed = notrack.remove(ns_args)
        _say(("removed table inet " + notrack.TABLE if had else "no ctdoctor notrack table installed")
             + (f"; removed {removed} untracked accept rule(s)" if removed else ""))
        return 0
    ports = ports_of(args.port)
    protos, chose = protos_for(ports, args.proto)
    if chose:
        print("\n".join(prose(chose, terminal_width(), "ctdoctor notrack: ", "  ")), file=sys.stderr)
    warns = notrack.warnings_for(ports, protos, args.direction)
    if args.backend == "iptables":
        if args.apply:
            raise UsageError("--apply installs nft rules; for iptables, run the printed commands")
        _print(notrack.iptables_rules(ports, protos, args.direction), warns)
        return 0
    table, accepts = notrack.nft_rules(ports, protos, args.direction)
    if not args.apply:
        _print(table, warns, "install with --apply (its own table; --remove deletes it)",
               "and in your stateful filter's input (and output, if its policy drops), before any drop:",
               [f"nft insert rule inet filter input {a}" for a in accepts])
        return 0
    if shutil.which("nft") is None:
        raise UsageError("notrack --apply needs the nft command (Debian package nftables)")
    named = [parse_chain(c) for c in args.accept_in]
    width = terminal_width()
    for line in notrack.install(ns_args, table, named):
        if line.startswith("  "):  # a command to run: broken between words, never wrapped
            print("\n".join(command(line.strip(), width, "  ")))
        else:
            _say(line, width)
    _say(f"installed table inet {notrack.TABLE}: {' and '.join(protos)} port(s) {', '.join(map(str, ports))} "
         f"untracked ({args.direction})", width)
    for w in warns:
        _say(w, width, "warning: ")
    return 0


def _say(text: str, width: int | None = None, first: str = "") -> None:
    """A sentence wrapped between words at the terminal's width, its next lines indented."""
    print("\n".join(prose(text, terminal_width() if width is None else width, first, "  ")))


def _print(lines: list[str], warns: list[str], last: str = "", accept_note: str = "",
           accepts: list[str] | None = None) -> None:
    """The rules (a ruleset or commands, printed as written unless one with a trailing ``# note`` is too wide:
    the note goes above it), then comments wrapped at the terminal's width: the accept rules a stateful
    filter needs (a command in a comment, broken between words with \\ continuations), the warnings, the
    last line."""
    width = terminal_width()
    out: list[str] = []
    for ln in lines:
        cmd, sep, note = ln.partition("   # ")
        out.extend(commented(cmd, note, width) if sep and len(ln) > width else [ln])
    if accept_note:
        out.extend(prose(accept_note, width, "# ", "# "))
        for a in accepts or []:
            out.extend(command(a, width, "#   ", "#       "))
    for w in warns:
        out.extend(prose(w, width, "# warning: ", "#   "))
    if last:
        out.extend(prose(last, width, "# ", "#   "))
    print("\n".join(out))
