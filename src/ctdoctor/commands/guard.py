"""ctdoctor guard: keep the live net.netfilter settings equal to the persisted ones.

Drift comes from a module reload (the module starts from its defaults), from
boot order, or from another tool writing the sysctls. Each pass reads the
persisted values (sysctl.d precedence, re-read every pass so files that
disappear and come back are followed) and writes back any live value that
differs, logging one journal-friendly line per change. ``--once`` does one
pass (cron, a systemd timer); otherwise it loops every ``--interval`` seconds.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from ctdoctor.commands.common import PERIOD, Needs, open_root
from ctdoctor.errors import UsageError


def add_arguments(p) -> None:
    p.add_argument("--once", action="store_true", help="one pass, then exit (for cron or a systemd timer)")
    p.add_argument("--interval", type=PERIOD, default=1.0, metavar="S", help="seconds between passes (default 1)")


def log(msg: str) -> None:
    # One line per event, no colour: journald / syslog friendly.
    print(f"ctdoctor-guard: {msg}", flush=True)


@dataclass
class GuardState:
    """What guard remembers between passes, so each condition is logged once, not every second."""

    had_config: bool = True
    failed: int = 0  # values not restored in the last pass
    bad: dict[str, str] = field(default_factory=dict)  # key -> the non-numeric persisted value reported
    missing: set[str] = field(default_factory=set)  # keys whose sysctl does not exist now


def one_pass(root, state: GuardState) -> int:
    """Restore drift once; returns the number of values restored (``state.failed``: not restored)."""
    from ctdoctor.model.kernel import NF
    from ctdoctor.model.textsafe import clean
    from ctdoctor.sources.persisted import read_persisted
    from ctdoctor.write.files import write_sysctl

    persisted = read_persisted(root)
    wanted = {k: s for k, s in persisted.sysctl.items() if k.startswith(NF) and not k.endswith("_count")}
    if not wanted:
        if state.had_config:
            log("no net.netfilter settings are persisted (sysctl.d, sysctl.conf): nothing to guard")
        state.had_config = False
        return 0
    if not state.had_config:
        log(f"persisted settings are back: guarding {len(wanted)} value(s)")
    state.had_config = True
    restored = 0
    state.failed = 0
    for key, s in sorted(wanted.items()):
        value = " ".join(s.value.split())
        if not all(w.lstrip("-").isdigit() and len(w) <= 20 for w in value.split()) or not value:
            # every net.netfilter sysctl is numeric: never write junk a file holds into the kernel
            if state.bad.get(key) != value:
                log(f"not restoring {key}: the persisted value {clean(s.value, 40)!r} ({s.file}:{s.lineno}) "
                    "is not a number")
            state.bad[key] = value
            state.failed += 1
            continue
        live = root.read_text("proc/sys/" + key.replace(".", "/"))
        if live is None:
            if key not in state.missing:
                log(f"{key} does not exist now (nf_conntrack not loaded?); will restore it when it appears")
            state.missing.add(key)
            continue
        state.missing.discard(key)
        if " ".join(live.split()) == " ".join(s.value.split()):
            continue
        try:
            write_sysctl(root, key, s.value)
        except Exception as e:
            log(f"could not restore {key} to {s.value}: {e}")
            state.failed += 1
            continue
        restored += 1
        log(f"restored {key} {live.strip()} -> {s.value} (persisted in {s.file}:{s.lineno})")
    return restored


def requires(args) -> Needs:
    return Needs(root=True, what="guard", why="to write sysctls")

def run(args) -> int:
    from ctdoctor.commands.common import check_format

    check_format(args, ("text",))  # --format is refused where it does not apply, never ignored

    root = open_root(args)
    if root.kind == "sosreport":
        raise UsageError("guard works on the live host (or a ctdoctor image directory for tests), not a sosreport")
    if getattr(args, "netns", None) not in (None, "init"):
        raise UsageError("guard keeps the host's persisted settings (sysctl.d applies to the initial netns); "
                         "--netns is not supported: a namespace's own settings are not persisted by the system")
    state = GuardState()
    if args.once:
        one_pass(root, state)
        return 1 if state.failed else 0
    log(f"guarding net.netfilter settings every {args.interval:g}s")
    try:
        while True:
            one_pass(root, state)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        log("stopped")
    sys.stdout.flush()
    return 0
