"""NOTRACK rules for a port and the accept a stateful filter needs: built, and installed with nft.

Direction ``in`` is a service on this host (clients connect to P): untrack packets *to* P
arriving (prerouting) and replies *from* P leaving (output). ``out`` is this host as a
client of P elsewhere. The rules go in their own table ``inet ctdoctor_notrack``; a user's
chain is only changed when named, with the accept placed after its drop rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ctdoctor.errors import Failure, UsageError
from ctdoctor.sources import children

TABLE = "ctdoctor_notrack"
TAG = "ctdoctor-notrack"
# Ports this host commonly uses as a *client*: untracking them outbound breaks its own lookups/fetches.
CLIENT_PORTS = {53: "DNS", 123: "NTP", 80: "HTTP", 443: "HTTPS", 389: "LDAP", 636: "LDAPS", 88: "Kerberos"}
Chain = tuple[str, str, str]


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


def nft_rules(ports: list[int], protos: list[str], direction: str) -> tuple[list[str], list[str]]:
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


def iptables_rules(ports: list[int], protos: list[str], direction: str) -> list[str]:
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


def warnings_for(ports: list[int], protos: list[str], direction: str) -> list[str]:
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


def ns_args(ns: str | None) -> list[str]:
    """The command prefix that runs nft in the netns ``ns`` (none for init)."""
    return ["ip", "netns", "exec", ns] if ns and ns != "init" else []


def _nft(ns_args: list[str], script: str | None = None, *args: str) -> children.Done:
    cmd = ns_args + ["nft"] + (["-f", "-"] if script is not None else list(args))
    return children.run_input(cmd, script)


def ruleset(ns_args: list[str]) -> list[dict[str, Any]]:
    r = _nft(ns_args, None, "-j", "list", "ruleset")
    if r.returncode:
        raise Failure("nft list ruleset failed: " + r.stderr.strip())
    try:
        objs: list[dict[str, Any]] = json.loads(r.stdout or '{"nftables": []}').get("nftables", [])
        return objs
    except json.JSONDecodeError as e:
        raise Failure(f"nft -j list ruleset gave no JSON ({e})") from None


def stateful_chains(objs: list[dict[str, Any]]) -> list[Chain]:
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


def accept_position(objs: list[dict[str, Any]], chain: Chain) -> tuple[str, int | None]:
    """Where the untracked accept belongs in a chain: after the last rule that can drop, reject, queue,
    jump or goto with any condition (a user's block stays above it), and before a catch-all drop or
    reject (rules after it are never reached). ("add", handle) = after that rule, ("insert", handle)
    = before it, ("add", None) = at the end."""
    rules = [o["rule"] for o in objs if "rule" in o and (o["rule"].get("family"), o["rule"].get("table"),
                                                          o["rule"].get("chain")) == chain]

    def verdict(r: dict[str, Any]) -> bool:  # a rule that can end a packet's way here, itself or in the chain it passes it to
        return any(isinstance(e, dict) and any(k in e for k in ("drop", "reject", "jump", "goto", "queue"))
                   for e in r.get("expr", []))

    def conditional(r: dict[str, Any]) -> bool:  # anything besides counting and logging decides which packets it takes: a match,
        # a limit, a meter, a set lookup ... (`limit rate over 10/second drop` is a drop with a condition)
        return any(isinstance(e, dict) and not set(e) <= QUIET_STATEMENTS for e in r.get("expr", []))

    def final(r: dict[str, Any]) -> bool:  # a catch-all drop or reject: nothing after it is reached
        return not conditional(r) and any(isinstance(e, dict) and ("drop" in e or "reject" in e)
                                          for e in r.get("expr", []))

    def away(r: dict[str, Any]) -> bool:  # every packet leaves this chain for good (goto, queue): no place here is after its drops
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


def accept_command(objs: list[dict[str, Any]], chain: Chain) -> list[str]:
    fam, tab, name = chain
    how, handle = accept_position(objs, chain)
    if how == "refuse":
        raise Failure(f"chain {fam} {tab} {name}: rule handle {handle} sends every packet to another chain for "
                      "good (goto/queue), so no place here is after its drops: add `ct state untracked accept` "
                      "yourself, after the drops of the chain it leads to")
    pos = ["position", str(handle)] if handle is not None else []
    return ["nft", how, "rule", fam, tab, name, *pos, "ct", "state", "untracked", "accept", "comment", f'"{TAG}"']


def has_tag(ns_args: list[str], fam: str, tab: str, chain: str) -> bool:
    r = _nft(ns_args, None, "-a", "list", "chain", fam, tab, chain)
    return TAG in r.stdout


def remove(ns_args: list[str]) -> tuple[bool, int]:
    """Remove what ``install`` put in: (the table was there, untracked accept rules removed)."""
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
    return t.returncode == 0, removed


def install(ns_args: list[str], table: list[str], named: list[Chain]) -> Iterator[str]:
    """Install the notrack table (replacing ours), add the untracked accept to the ``named`` chains, and
    say (a line each, as it goes) where every other stateful chain needs it. Nothing is installed when a
    named chain does not exist or has no safe place for it."""
    objs = ruleset(ns_args)
    chains = stateful_chains(objs)
    known = {(o["chain"]["family"], o["chain"]["table"], o["chain"]["name"]) for o in objs if "chain" in o}
    for chain in named:
        if chain not in known:
            raise UsageError(f"--accept-in {':'.join(chain)}: no such chain")
    # where each named chain's accept goes, decided before anything is installed (a chain with no safe
    # place refuses here, with nothing half done)
    planned = {chain: accept_command(objs, chain) for chain in named if not has_tag(ns_args, *chain)}
    _nft(ns_args, None, "delete", "table", "inet", TABLE)  # idempotent: replace what we installed before
    r = _nft(ns_args, "\n".join(table) + "\n")
    if r.returncode:
        raise Failure("installing the notrack table failed: " + r.stderr.strip())
    for chain, cmd in planned.items():
        r = _nft(ns_args, None, *cmd[1:])
        if r.returncode:
            raise Failure(f"adding the untracked accept to {' '.join(chain)} failed: {r.stderr.strip()}")
        yield f"added 'ct state untracked accept' to {' '.join(chain)} (after its drop rules)"
    for chain in chains:
        if chain in named or has_tag(ns_args, *chain):
            continue
        yield from _advice(objs, chain)


def _advice(objs: list[dict[str, Any]], chain: Chain) -> Iterator[str]:
    try:
        cmd = accept_command(objs, chain)
    except Failure as e:  # no safe place in that chain: say where a person should put it
        yield f"your chain {' '.join(chain)} matches ct state and will drop the untracked packets: {e}"
        return
    yield (f"your chain {' '.join(chain)} matches ct state and will drop the untracked packets; add the accept "
           f"after its drops (or rerun with --accept-in {':'.join(chain)}):")
    yield "  " + " ".join(cmd).replace(f'"{TAG}"', f"'\"{TAG}\"'")
