"""Nagios plugin output: one status line, then perfdata per netns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ctdoctor.model import thresholds

if TYPE_CHECKING:
    from ctdoctor.model.snapshot import NetnsState

LABEL = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


def _label(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def render(doc: dict[str, Any], code: int, namespaces: Iterable[NetnsState]) -> str:
    worst = [f for f in doc["findings"] if f["severity"] in ("critical", "warning")]
    if worst:
        msg = "; ".join(f"{f['id']} {f['summary']}" for f in worst[:3])
        if len(worst) > 3:
            msg += f" (+{len(worst) - 3} more)"
    elif code == 3:
        skipped = [f"{u['id']}" + (f" ({u['netns']})" if u.get("netns") else "") for u in doc["unknown"]]
        unentered = [n.split()[1] for n in doc.get("notes", []) if "could not be entered" in n]
        if doc.get("unprivileged"):
            parts = [f"{st.name} {st.count}/{st.max}" for st in namespaces if st.count is not None]
            msg = ("not run as root: " + (f"{len(skipped)} check(s) skipped: " + ", ".join(skipped[:8])
                                          if skipped else "")
                   + ("; " if skipped and unentered else "")
                   + (f"{len(unentered)} netns not entered" if unentered else "")
                   + ("; read: " + ", ".join(parts[:4]) if parts else "") + " (run as root, or give the user "
                   "CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_SYSLOG)")
        else:
            msg = "; ".join(f"{u['id']}: {u['reason']}" for u in doc["unknown"][:2]) or "not enough data"
    else:
        parts = [f"{st.name} {st.count}/{st.max}" for st in namespaces if st.count is not None]
        msg = "conntrack OK" + (": " + ", ".join(parts[:4]) if parts else "")
    perf = []
    for st in namespaces:
        n = _label(st.name)
        sums = st.stats.sums if st.stats else {}
        warn = int(st.max * thresholds.FILL_WARNING) if st.max else ""
        crit = int(st.max * thresholds.FILL_CRITICAL) if st.max else ""
        if st.count is not None:
            perf.append(f"'count_{n}'={st.count};{warn};{crit};0;{st.max or ''}")
        if st.max:
            perf.append(f"'max_{n}'={st.max}")
        if st.fill is not None:
            perf.append(f"'fill_{n}'={st.fill * 100:.2f}%;{thresholds.FILL_WARNING * 100:g};"
                        f"{thresholds.FILL_CRITICAL * 100:g};0;100")
        for k in ("drop", "insert_failed", "early_drop"):
            if k in sums:
                perf.append(f"'{k}_{n}'={sums[k]}c")
    line = f"CONNTRACK {LABEL[code]} - {msg}".replace("|", "/")
    return line + (" | " + " ".join(perf) if perf else "")


def unknown_line(reason: str) -> str:
    """What a Nagios plugin prints when it could not judge: one line, exit 3."""
    return f"CONNTRACK UNKNOWN - {' '.join(reason.split())}".replace("|", "/")
