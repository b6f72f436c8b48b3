"""Kernel settings: the ``/proc/sys`` tree and ``sysctl -a`` output.

Names are kept in dotted form (``net.netfilter.nf_conntrack_max``). Legacy
names from the ``ip_conntrack`` era (``net.ipv4.netfilter.ip_conntrack_max``,
RHEL 5/6) and the ``net.nf_conntrack_max`` alias are mapped to the modern
name by ``ctdoctor.model.kernel.canonical`` (pure, shared with the drift logic).
"""

from __future__ import annotations

import re

# stderr sysctl writes while stdout goes on; sosreport merges both, so these fragments can sit at
# the start, in the middle or at the end of a value line.
_NOISE = re.compile(r'sysctl: |reading key "[^"\n]*"|permission denied on key [\'"][^\'"\n]*[\'"](?:, ignoring)?|'
                    r'cannot stat [^\s]+: [^\n]*?(?= ?[\w.]+ = |$)|setting key "[^"\n]*"(?:: [^\n]*?)?(?= ?[\w.]+ = |$)')
_KEY = re.compile(r"^[A-Za-z0-9_.:@/-]+$")


def parse_sysctl_a(text: str) -> dict[str, str]:
    """``sysctl -a`` output -> {key: value}; tolerates stderr merged anywhere into a line.

    ``sysctl: reading key "..."`` can land before a key (``sysctl: net.x = 1``), after a value,
    or inside one (the value's rest on the next line): the fragments are cut out, and a line
    whose noise ended it is joined with a following line that is not a ``key = value`` of its own.
    """
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        ln = _NOISE.sub("", raw)
        cut_at_end = ln != raw and not raw.rstrip().endswith(ln.rstrip()) if ln.strip() else False
        i += 1
        if cut_at_end and " = " in ln and i < len(lines):
            nxt = _NOISE.sub("", lines[i])
            if nxt.strip() and " = " not in nxt:
                ln += nxt.strip()
                i += 1
        if " = " not in ln:
            continue
        k, _, v = ln.partition(" = ")
        k = k.strip()
        if not k or not _KEY.match(k):
            continue
        out[k] = v.strip()
    return out


