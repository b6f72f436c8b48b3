"""``apply``: the settings to persist and apply, computed from what the host has now, then written.

``compute`` gives the file changes (``persist.compute``) and the live values that differ;
``apply_live`` sets them (the hash size through the module parameter on kernels whose
``nf_conntrack_buckets`` is read-only)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ctdoctor.errors import Failure, UsageError
from ctdoctor.model.kernel import NF
from ctdoctor.sources import files, snapshot
from ctdoctor.sources.hostroot import HostRoot
from ctdoctor.sources.persisted import parse_sysctl_conf, read_persisted
from ctdoctor.write import persist
from ctdoctor.write.files import FileChange, write_sysctl
from ctdoctor.write.persist import SYSCTL_FILE

TIMEOUT_RE = re.compile(r"^(?:nf_conntrack_)?([a-z0-9_]+)=(\d+)$")
INT_MAX = 2**31 - 1  # the sysctls are C ints

Plan = dict[str, Any]
LiveChange = tuple[str, str, str]  # (key, now, wanted)


def parse_timeouts(given: list[str]) -> dict[str, int]:
    """``--timeout NAME=SECONDS`` (repeatable) -> {nf_conntrack_NAME: seconds}; UsageError otherwise."""
    timeouts: dict[str, int] = {}
    for t in given:
        m = TIMEOUT_RE.match(t.strip())
        if not m:
            raise UsageError(f"--timeout {t}: use NAME=SECONDS, e.g. tcp_timeout_established=86400")
        name = "nf_conntrack_" + m.group(1)
        if "timeout" not in name:
            raise UsageError(f"--timeout {t}: {name} is not a timeout")
        secs = int(m.group(2)) if len(m.group(2)) < 12 else INT_MAX + 1
        if not 1 <= secs <= INT_MAX:
            raise UsageError(f"--timeout {t}: seconds must be 1..{INT_MAX}")
        timeouts[name] = secs
    return timeouts


def saved_plan(path: str) -> Plan:
    """A plan `ctdoctor plan --format json` wrote: its pick and timeouts, checked."""
    try:
        doc = json.loads(files.read_bytes(path, 1 << 20))
    except OSError as e:
        raise UsageError(f"--from-plan {path}: {e.strerror}") from None
    except ValueError:
        raise UsageError(f"--from-plan {path}: not JSON (save it with `ctdoctor plan --format json`)") from None
    try:
        pick = doc["pick"]
        ok = (isinstance(pick["max"], int) and isinstance(pick["buckets"], int)
              and all(isinstance(t["name"], str) and isinstance(t["suggested"], int) for t in doc["timeouts"]))
    except (KeyError, TypeError):
        ok = False
    if not ok or doc.get("schema") != 1:
        raise UsageError(f"--from-plan {path}: not a plan (save it with `ctdoctor plan --format json`)")
    return dict(doc)


def compute(root: HostRoot, max_: int | None, buckets: int | None, timeouts: dict[str, int],
            plan: Callable[[], Plan] | None = None) -> tuple[list[FileChange], list[LiveChange], bool]:
    """(file changes, live settings to apply, module_builtin). ``plan``: gives the plan whose numbers
    fill in what was not given (``--from-plan``)."""
    snap = snapshot.build(root, None, interval=None, with_rules=False, with_log=False)
    for name in timeouts:
        if snap.settings and NF + name not in snap.settings:
            raise UsageError(f"--timeout: this kernel has no net.netfilter.{name}")
    if plan is not None:
        p = plan()
        max_ = max_ or p["pick"]["max"]
        buckets = buckets or p["pick"]["buckets"]
        for t in p["timeouts"]:
            timeouts.setdefault(t["name"], t["suggested"])
    counts = [st.count for st in snap.namespaces if st.count is not None]
    if max_ is not None and counts and max_ < max(counts):
        raise UsageError(f"--max {max_} is below the {max(counts)} entries the table holds now: "
                         "new connections would fail at once")
    # no values given: keep the persisted ones, and install what loads conntrack early and re-applies them
    # after a module reload (modules-load.d, the udev rule, IPTABLES_SYSCTL_LOAD_LIST): what CT006, CT007 and
    # CT008 ask for; when those are in place too, it says there is nothing to change
    builtin = snap.modules.get("nf_conntrack") is not None and snap.modules["nf_conntrack"].state == "builtin"
    changes = persist.compute(root, max_=max_, buckets=buckets, timeouts=timeouts, module_builtin=builtin)
    wanted = persist.desired_settings(root, max_, buckets, timeouts)
    live = []
    for k, v in sorted(wanted.items()):
        cur = snap.settings.get(k)
        if cur is not None and cur.strip() != v:
            live.append((k, cur.strip(), v))
    return changes, live, builtin


def overrides(root: HostRoot, changes: list[FileChange]) -> list[str]:
    """Lines of files that systemd-sysctl / ``sysctl --system`` read after 90-ctdoctor.conf and
    that set one of its keys to another value: at boot they win."""
    ours = next((c for c in changes if c.path == SYSCTL_FILE), None)
    if ours is None:
        return []
    wanted = {s.key: s.value for s in parse_sysctl_conf(ours.new, SYSCTL_FILE)}
    p = read_persisted(root)
    files_read = p.sysctl_files
    if SYSCTL_FILE in files_read:
        later = set(files_read[files_read.index(SYSCTL_FILE) + 1:])
    else:  # not written yet: where it would sort among the sysctl.d files (sysctl.conf is always last)
        later = {f for f in files_read if f.rsplit("/", 1)[-1] > "90-ctdoctor.conf" or f == "/etc/sysctl.conf"}
    out = []
    for s in p.sysctl_all:
        if s.file in later and s.key in wanted and " ".join(s.value.split()) != wanted[s.key]:
            out.append(f"{s.file}:{s.lineno} sets {s.key} = {s.value} and is read after {SYSCTL_FILE}: "
                       f"at boot it wins (remove that line, or set it to {wanted[s.key]})")
    return out


def apply_live(root: HostRoot, live: list[LiveChange]) -> None:
    """Set each live value; the hash size through the module parameter where the sysctl is read-only."""
    for k, _, v in live:
        try:
            write_sysctl(root, k, v)
        except Failure:
            if not k.endswith("nf_conntrack_buckets"):
                raise
            # Older kernels: the sysctl is read-only, the module parameter resizes the hash.
            param = root.path / "sys/module/nf_conntrack/parameters/hashsize"
            try:
                param.write_text(f"{v}\n")
            except OSError as e:
                raise Failure(f"cannot resize the hash to {v}: nf_conntrack_buckets is read-only and {param}: "
                              f"{e}") from None
