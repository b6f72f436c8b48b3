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

import json
import shutil
import subprocess

from ctdoctor.commands.common import Needs
from ctdoctor.errors import Failure, UsageError

TABLE = "ctdoctor_notrack"
TAG = "ctdoctor-notrack"
# Ports this host commonly uses as a *client*: untracking them outbound breaks its own lookups/fetches.
CLIENT_PORTS = {53: "DNS", 123: "NTP", 80: "HTTP", 443: "HTTPS", 389: "LDAP", 636: "LDAPS", 88: "Kerberos"}


def add_arguments(p) -> None:
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


def _proto_match(protos: list[str]) -> str:
    return "meta l4proto { tcp, udp } th" if len(protos) > 1 else protos[0]


def _untracked(direction: str) -> list[tuple[str, str]]:
    """(hook, port field) of each NOTRACK rule: ``in`` untracks packets to the port arriving and
    replies from it leaving; ``out`` the other way round."""
    out = []
    if direction in ("in", "both"):
        out += [("prerouting", "dport"), ("output", "sport")]
    if direction in ("out", "both"):
        out += [("output", "dport"), ("prerouting", "sport")]
    return out


def nft_rules(ports, protos, direction) -> tuple[list[str], list[str]]:
    """(lines of the notrack table, accept statements to put in the stateful filter chains)."""
    ps = ", ".join(map(str, ports))
    pset = f"{{ {ps} }}" if len(ports) > 1 else ps
    m = _proto_match(protos)
    rules = {hook: [f"{m} {field} {pset} notrack" for h, field in _untracked(direction) if h == hook]
             for hook in ("prerouting", "output")}
    table = [f"table inet {TABLE} {{",
             "\tchain prerouting {", "\t\ttype filter hook prerouting priority raw; policy accept;",
             *[f"\t\t{r}" for r in rules["prerouting"]], "\t}",
             "\tchain output {", "\t\ttype filter hook output priority raw; policy accept;",
             *[f"\t\t{r}" for r in rules["output"]], "\t}", "}"]
    return table, [f'ct state untracked accept comment "{TAG}"']


def iptables_rules(ports, protos, direction) -> list[str]:
    cmd = []
    ps = ",".join(map(str, ports))
    many = len(ports) > 1
    for proto in protos:  # iptables matches one protocol per rule
        match = f"-p {proto} -m multiport" if many else f"-p {proto}"
        for hook, field in _untracked(direction):
            flag = f"--{field}s" if many else f"--{field}"
            cmd.append(f"iptables -t raw -A {hook.upper()} {match} {flag} {ps} -j CT --notrack")
    cmd.append("iptables -I INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT")
    cmd.append("iptables -I OUTPUT -m conntrack --ctstate UNTRACKED -j ACCEPT   # if OUTPUT's policy is DROP")
    return cmd


def warnings_for(ports, protos, direction) -> list[str]:
    out = []
    for p in ports:
        if direction in ("out", "both") and p in CLIENT_PORTS:
            out.append(f"port {p} ({CLIENT_PORTS[p]}) is one this host also uses as a client: untracking it "
                       "outbound means the answers to the host's own queries arrive untracked too, and a filter "
                       "without the untracked accept drops them (the classic `--dport 53 -j NOTRACK` in both "
                       "chains breaks the host's own DNS)")
        if direction in ("in", "both") and p in CLIENT_PORTS:
            out.append(f"port {p} ({CLIENT_PORTS[p]}): only packets to a service on this host are untracked; the "
                       "host's own outgoing queries stay tracked")
    if "tcp" in protos:
        out.append("untracked TCP gets no NAT and no state checks; keep it for ports with no NAT in their path")
    return out


def _nft(ns_args, script: str | None = None, *args) -> subprocess.CompletedProcess:
    cmd = ns_args + ["nft"] + (["-f", "-"] if script is not None else list(args))
    return subprocess.run(cmd, input=script, capture_output=True, text=True)


def _ruleset(ns_args) -> list[dict]:
    r = _nft(ns_args, None, "-j", "list", "ruleset")
    if r.returncode:
        raise Failure("nft list ruleset failed: " + r.stderr.strip())
    try:
        return json.loads(r.stdout or '{"nftables": []}').get("nftables", [])
    except json.JSONDecodeError as e:
        raise Failure(f"nft -j list ruleset gave no JSON ({e})") from None


def stateful_chains(objs: list[dict]) -> list[tuple[str, str, str]]:
    """(family, table, chain) of input/output base chains that match on ct state."""
    base, uses_state = {}, set()
    for obj in objs:
        if "chain" in obj:
            c = obj["chain"]
            if c.get("hook") in ("input", "output") and c.get("type") == "filter" and c.get("table") != TABLE:
                base[(c["family"], c["table"], c["name"])] = c
        elif "rule" in obj:
            r_ = obj["rule"]
            if '"ct": {"key": "state"' in json.dumps(r_.get("expr", [])):
                uses_state.add((r_["family"], r_["table"], r_["chain"]))
    return sorted(k for k in base if k in uses_state)


# statements that take every packet the way it came: they neither select nor decide
QUIET_STATEMENTS = {"counter", "log", "comment", "drop", "reject", "accept", "jump", "goto", "queue", "continue",
                    "return"}


def accept_position(objs: list[dict], chain: tuple[str, str, str]) -> tuple[str, int | None]:
    """Where the untracked accept belongs in a chain: after the last rule that can drop, reject, queue,
    jump or goto with any condition (a user's block stays above it), and before a catch-all drop or
    reject (rules after it are never reached). ("add", handle) = after that rule, ("insert", handle)
    = before it, ("add", None) = at the end."""
    rules = [o["rule"] for o in objs if "rule" in o and (o["rule"].get("family"), o["rule"].get("table"),
                                                          o["rule"].get("chain")) == chain]

    def verdict(r):  # a rule that can end a packet's way here, itself or in the chain it passes it to
        return any(isinstance(e, dict) and any(k in e for k in ("drop", "reject", "jump", "goto", "queue"))
                   for e in r.get("expr", []))

    def conditional(r):  # anything besides counting and logging decides which packets it takes: a match,
        # a limit, a meter, a set lookup ... (`limit rate over 10/second drop` is a drop with a condition)
        return any(isinstance(e, dict) and not set(e) <= QUIET_STATEMENTS for e in r.get("expr", []))

    def final(r):  # a catch-all drop or reject: nothing after it is reached
        return not conditional(r) and any(isinstance(e, dict) and ("drop" in e or "reject" in e)
                                          for e in r.get("expr", []))

    def away(r):  # every packet leaves this chain for good (goto, queue): no place here is after its drops
        return not conditional(r) and any(isinstance(e, dict) and ("goto" in e or "queue" in e)
                                          for e in r.get("expr", []))

    stop = next((i for i, r in enumerate(rules) if final(r) or away(r)), len(rules))
    if stop < len(rules) and away(rules[stop]):
        return "refuse", rules[stop]["handle"]
    last = max((i for i, r in enumerate(rules[:stop]) if verdict(r)), default=None)
    if last is not None:
        return "add", rules[last]["handle"]
    if stop < len(rules):
        return "insert", rules[stop]["handle"]
    return "add", None


def accept_command(objs, chain) -> list[str]:
    fam, tab, name = chain
    how, handle = accept_position(objs, chain)
    if how == "refuse":
        raise Failure(f"chain {fam} {tab} {name}: rule handle {handle} sends every packet to another chain for "
                      "good (goto/queue), so no place here is after its drops: add `ct state untracked accept` "
                      "yourself, after the drops of the chain it leads to")
    pos = ["position", str(handle)] if handle is not None else []
    return ["nft", how, "rule", fam, tab, name, *pos, "ct", "state", "untracked", "accept", "comment", f'"{TAG}"']


def parse_chain(text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"--accept-in {text}: use FAMILY:TABLE:CHAIN, e.g. inet:filter:input")
    return parts[0], parts[1], parts[2]


def requires(args) -> Needs:
    if args.apply or args.remove:
        return Needs(live=True, root=True, what="notrack --apply" if args.apply else "notrack --remove",
                     why="CAP_NET_ADMIN to change the ruleset")
    return Needs()

def run(args) -> int:
    from ctdoctor.commands.common import check_format

    check_format(args, ("text",))  # --format is refused where it does not apply, never ignored
    ns = getattr(args, "netns", None)
    ns_args = ["ip", "netns", "exec", ns] if ns and ns != "init" else []
    if ns == "all":
        raise UsageError("notrack works on one netns at a time")
    if args.remove:
        return _remove(ns_args)
    ports = ports_of(args.port)
    protos, chose = protos_for(ports, args.proto)
    if chose:
        import sys

        print(f"ctdoctor notrack: {chose}", file=sys.stderr)
    warns = warnings_for(ports, protos, args.direction)
    if args.backend == "iptables":
        if args.apply:
            raise UsageError("--apply installs nft rules; for iptables, run the printed commands")
        _print(iptables_rules(ports, protos, args.direction), warns)
        return 0
    table, accepts = nft_rules(ports, protos, args.direction)
    if not args.apply:
        _print([*table, "# and in your stateful filter's input (and output, if its policy drops), before any drop:",
                *(f"#   nft insert rule inet filter input {a}" for a in accepts)], warns,
               "# install with --apply (its own table; --remove deletes it)")
        return 0
    if shutil.which("nft") is None:
        raise UsageError("notrack --apply needs the nft command (Debian package nftables)")
    named = [parse_chain(c) for c in args.accept_in]
    objs = _ruleset(ns_args)
    chains = stateful_chains(objs)
    known = {(o["chain"]["family"], o["chain"]["table"], o["chain"]["name"]) for o in objs if "chain" in o}
    for chain in named:
        if chain not in known:
            raise UsageError(f"--accept-in {':'.join(chain)}: no such chain")
    # where each named chain's accept goes, decided before anything is installed (a chain with no safe
    # place refuses here, with nothing half done)
    planned = {chain: accept_command(objs, chain) for chain in named if not _has_tag(ns_args, *chain)}
    _nft(ns_args, None, "delete", "table", "inet", TABLE)  # idempotent: replace what we installed before
    r = _nft(ns_args, "\n".join(table) + "\n")
    if r.returncode:
        raise Failure("installing the notrack table failed: " + r.stderr.strip())
    for chain, cmd in planned.items():
        r = _nft(ns_args, None, *cmd[1:])
        if r.returncode:
            raise Failure(f"adding the untracked accept to {' '.join(chain)} failed: {r.stderr.strip()}")
        print(f"added 'ct state untracked accept' to {' '.join(chain)} (after its drop rules)")
    for chain in chains:
        if chain in named or _has_tag(ns_args, *chain):
            continue
        try:
            cmd = accept_command(objs, chain)
        except Failure as e:  # no safe place in that chain: say where a person should put it
            print(f"your chain {' '.join(chain)} matches ct state and will drop the untracked packets: {e}")
            continue
        print(f"your chain {' '.join(chain)} matches ct state and will drop the untracked packets; add the accept "
              f"after its drops (or rerun with --accept-in {':'.join(chain)}):")
        print("  " + " ".join(cmd).replace(f'"{TAG}"', f"'\"{TAG}\"'"))
    print(f"installed table inet {TABLE}: {' and '.join(protos)} port(s) {', '.join(map(str, ports))} untracked "
          f"({args.direction})")
    for w in warns:
        print(f"warning: {w}")
    return 0


def _print(lines: list[str], warns: list[str], last: str = "") -> None:
    for ln in lines:
        print(ln)
    for w in warns:
        print(f"# warning: {w}")
    if last:
        print(last)


def _has_tag(ns_args, fam, tab, chain) -> bool:
    r = _nft(ns_args, None, "-a", "list", "chain", fam, tab, chain)
    return TAG in r.stdout


def _remove(ns_args) -> int:
    r = _nft(ns_args, None, "-j", "list", "ruleset")
    removed = 0
    if r.returncode == 0:
        for obj in json.loads(r.stdout or '{"nftables": []}').get("nftables", []):
            rule = obj.get("rule")
            if rule and rule.get("comment") == TAG:
                _nft(ns_args, None, "delete", "rule", rule["family"], rule["table"], rule["chain"], "handle",
                     str(rule["handle"]))
                removed += 1
    t = _nft(ns_args, None, "delete", "table", "inet", TABLE)
    print(("removed table inet " + TABLE if t.returncode == 0 else "no ctdoctor notrack table installed")
          + (f"; removed {removed} untracked accept rule(s)" if removed else ""))
    return 0
