"""The command-line parser: the commands, the global options before or after them, one-line usage
errors with the value meant. ``cli`` runs it; ``completion`` writes shell completion and the man page
from it."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from ctdoctor import __version__
from ctdoctor.commands.common import add_global_options, did_you_mean
from ctdoctor.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

# command -> (module with add_arguments(p) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("ctdoctor.commands.doctor", "run every check: findings with evidence, explanation and fix commands"),
    "status": ("ctdoctor.commands.status", "count / max / buckets per netns, fill, stats and rates, modules, drift"),
    "top": ("ctdoctor.commands.top", "who fills the table: group entries by src, dst, port, state, ..."),
    "checks": ("ctdoctor.commands.explain", "the catalogue of checks"),
    "explain": ("ctdoctor.commands.explain", "one check's page: what it detects, why it matters, how to fix"),
    "collect": ("ctdoctor.commands.collect", "capture a host image (tar.gz) for offline use with --root"),
    "plan": ("ctdoctor.commands.plan", "recommend max, buckets and timeouts from RAM, CPUs and the observed load"),
    "apply": ("ctdoctor.commands.apply", "persist and apply settings (dry run with a diff unless --yes)"),
    "recover": ("ctdoctor.commands.recover", "load conntrack and NAT again after an unload, re-apply settings, verify"),
    "guard": ("ctdoctor.commands.guard", "keep live settings equal to the persisted ones (restore drift)"),
    "flush": ("ctdoctor.commands.flush", "delete entries by state, address or port (never ESTABLISHED unless asked)"),
    "notrack": ("ctdoctor.commands.notrack", "NOTRACK rules for a port, with the accept rules a stateful filter needs"),
    "exporter": ("ctdoctor.commands.exporter", "Prometheus metrics for every netns: serve /metrics or write a textfile"),
    "record": ("ctdoctor.commands.record", "capture an incident bundle when a netns fills up or drops (a daemon)"),
    "incidents": ("ctdoctor.commands.incidents", "list the incidents `record` captured"),
    "lab": ("ctdoctor.commands.lab", "reproduce conntrack incidents on the real kernel in a throwaway netns"),
    "completion": ("ctdoctor.commands.completion", "shell completion (bash, zsh, fish) or the man page, from the parser"),
}
DEFAULT_COMMAND = "doctor"


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (``ctdoctor: error: ...``) and exit 2, for scripts and Nagios."""

    def error(self, message: str) -> NoReturn:
        said = _choice_message(message)
        see = "" if said.endswith("?") else f" (see: {self.prog} --help)"  # a suggestion says enough
        self.exit(2, f"ctdoctor: error: {said}{see}\n")


def _choice_message(message: str) -> str:
    """argparse's ``argument --format: invalid choice: 'jsn' (choose from 'text', 'json', ...)`` said as
    ``--format: no format 'jsn'; did you mean 'json'?``."""
    m = re.match(r"argument (\S+): invalid choice: '(.*)' \(choose from (.*)\)$", message)
    if not m:
        return message
    opt, value, choices = m.group(1), m.group(2), re.findall(r"'([^']*)'", m.group(3))
    near = did_you_mean(value, choices)
    what = opt.lstrip("-").split("/")[0]
    said = f"no {what} {value!r}" + (f"; did you mean {near!r}?" if near else f" (one of: {', '.join(choices)})")
    return f"{opt}: {said}" if opt.startswith("-") else said


class _QuietParser(argparse.ArgumentParser):
    """The pre-parse that finds the command: a bad value is left for the real parser to say, once."""

    def error(self, message: str) -> NoReturn:
        raise SystemExit(2)


class _Version(argparse.Action):
    """``ctdoctor 0.1.0 (C scanner)``: a fleet installed from a wheel can see that it got the C
    scanner (found when asked, not when every parser is built)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        from ctdoctor.listing.accel import accelerated, disabled  # loads the C scanner: only when asked

        scanner = "C scanner" if accelerated() else \
            "pure-Python scanner: CTDOCTOR_NO_ACCEL is set" if disabled() else \
            "pure-Python scanner: the C one is not built"
        print(f"ctdoctor {__version__} ({scanner})")  # on stdout, as argparse's own version action
        parser.exit(0)


def build_parser(commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    p = _Parser(
        prog="ctdoctor",
        description="See, explain, fix and guard Linux netfilter connection tracking (nf_conntrack).",
        epilog=f"Without a command, runs `{DEFAULT_COMMAND}`. Exit codes of doctor: 0 OK, 1 WARNING, 2 CRITICAL, "
               "3 UNKNOWN; other commands: 0 success, 1 failure, 2 bad usage or input.",
    )
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and the scanner `top` uses, and exit")
    add_global_options(p, suppress=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (mod, help_) in commands.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        add_global_options(sp, suppress=True)
        sp.set_defaults(_module=mod)
    return p


def choose_command(argv: list[str], commands: dict[str, tuple[str, str]]) -> tuple[str | None, list[str]]:
    """The command the user named, found by parsing the global options first (a value such as
    ``--root top`` is never taken for a command), and argv with the default command added."""
    pre = _QuietParser(add_help=False, allow_abbrev=False)
    add_global_options(pre, suppress=True)
    try:
        _, rest = pre.parse_known_args(argv)
    except SystemExit:
        return None, argv  # a global option without its value: the real parser says so
    first = next((a for a in rest if not a.startswith("-")), None)
    if first in commands:
        return first, argv
    if first is not None and first.replace("-", "").isalpha():
        # no command takes a bare word: it is a mistyped command (`stauts`), said as such
        import difflib  # only for a mistyped command

        near = difflib.get_close_matches(first, list(commands), n=1, cutoff=0.6)
        raise UsageError(f"unknown command {first!r}" + (f" (did you mean {near[0]}?)" if near else "")
                         + " (see: ctdoctor --help)")
    if any(a in ("-h", "--help", "--version") for a in rest):
        return None, argv
    chosen = DEFAULT_COMMAND if DEFAULT_COMMAND in commands else "status"
    return chosen, [chosen, *argv]
