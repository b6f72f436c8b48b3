"""``guard``: keep the live net.netfilter settings equal to the persisted ones, one pass at a time.

Each pass reads the persisted values (sysctl.d precedence, re-read every pass so files that
disappear and come back are followed) and writes back any live value that differs, logging
one journal-friendly line per change; what it already said is remembered in ``GuardState``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctdoctor.errors import CtdError
from ctdoctor.model.kernel import NF
from ctdoctor.model.textsafe import clean
from ctdoctor.sources.hostroot import HostRoot
from ctdoctor.sources.persisted import read_persisted
from ctdoctor.write.files import write_sysctl


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


def one_pass(root: HostRoot, state: GuardState) -> int:
    """Restore drift once; returns the number of values restored (``state.failed``: not restored)."""
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
        except (CtdError, OSError) as e:
            log(f"could not restore {key} to {s.value}: {e}")
            state.failed += 1
            continue
        restored += 1
        log(f"restored {key} {live.strip()} -> {s.value} (persisted in {s.file}:{s.lineno})")
    return restored
