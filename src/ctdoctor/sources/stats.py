"""Per-CPU conntrack statistics: ``/proc/net/stat/nf_conntrack`` and ``conntrack -S``.

The proc file has a header line and one line of hex numbers per possible
CPU (``ct_cpu_seq_show``). Its columns changed over time, so they are read
by header name, never by position:

- up to 5.9: ``entries searched found new invalid ignore delete delete_list
  insert insert_failed drop early_drop icmp_error expect_new expect_create
  expect_delete search_restart``
- 5.10: ``searched`` became ``clashres``
- 5.15 on: ``delete_list`` became ``chainlength``; ``new``, ``ignore`` and
  ``delete`` are printed as 0.

``entries`` is the netns's conntrack count repeated on every line (not a
per-CPU value), so it is not summed. ``conntrack -S`` prints ``cpu=N key=value
...`` with its own names (``error`` for icmp_error, ``clash_resolve``,
``chaintoolong``); both are mapped to one set of names here.
"""

from __future__ import annotations

from ctdoctor.errors import InputError
from ctdoctor.model.stats import NOT_SUMMED, CpuStats  # noqa: F401 - the type lives in model

# conntrack -S names -> the proc header's names
_S_ALIASES = {"error": "icmp_error", "clash_resolve": "clashres", "chaintoolong": "chainlength"}


class StatsParseError(InputError):
    pass




def parse_proc_stat(text: str, source: str = "/proc/net/stat/nf_conntrack") -> CpuStats:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise StatsParseError(f"{source}: empty")
    header = lines[0].split()
    if not header or header[0] != "entries" or not all(h.replace("_", "").isalpha() for h in header):
        raise StatsParseError(f"{source}: line 1 is not the nf_conntrack stats header")
    st = CpuStats(columns=header, source=source)
    for n, ln in enumerate(lines[1:], 2):
        vals = ln.split()
        if len(vals) != len(header):
            raise StatsParseError(f"{source}: line {n} has {len(vals)} columns, header has {len(header)} (truncated?)")
        try:
            row = {h: int(v, 16) for h, v in zip(header, vals, strict=True)}
        except ValueError:
            raise StatsParseError(f"{source}: line {n} is not hex numbers") from None
        st.per_cpu.append(row)
        st.entries = row.get("entries")
    return st


def parse_conntrack_S(text: str, source: str = "conntrack -S") -> CpuStats:
    st = CpuStats(source=source)
    cols: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        ln = raw.strip()
        if not ln or ln.startswith(("conntrack v", "sysctl:")):
            continue
        if not ln.startswith("cpu="):
            if "=" in ln and ln.split("=")[0].isidentifier():
                continue  # e.g. the expectation line of newer conntrack-tools
            raise StatsParseError(f"{source}: line {n} is not conntrack -S output")
        row: dict[str, int] = {}
        for tok in ln.split():
            k, eq, v = tok.partition("=")
            if not eq:
                raise StatsParseError(f"{source}: line {n}: unexpected token {tok!r}")
            if k == "cpu":
                continue
            k = _S_ALIASES.get(k, k)
            try:
                row[k] = int(v)
            except ValueError:
                raise StatsParseError(f"{source}: line {n}: {k}={v!r} is not a number") from None
            if k not in cols:
                cols.append(k)
        st.per_cpu.append(row)
    if not st.per_cpu:
        raise StatsParseError(f"{source}: no cpu= lines")
    st.columns = cols
    return st
