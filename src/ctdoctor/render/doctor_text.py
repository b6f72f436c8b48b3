"""Text rendering of the doctor's report: grouped by severity, each finding with its numbers,
evidence (value and file), explanation and fix commands."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ctdoctor.model.fixes import Fix, lines
from ctdoctor.render import fmt
from ctdoctor.render.wrap import hang, with_source

if TYPE_CHECKING:
    from rich.console import Group
    from rich.text import Text

STYLE = {"critical": "bold red", "warning": "bold yellow", "info": "cyan"}
WORD = {"critical": "CRITICAL", "warning": "WARNING", "info": "INFO"}


def render(doc: dict[str, Any], verbose_info: bool = False, width: int = 80) -> Group:
    """The report for a person: a header, one entry per finding (a check over many namespaces is one
    entry) with its first fix, then the details of the WARNING and CRITICAL ones (``verbose_info``:
    of every finding)."""
    from rich.console import Group
    from rich.markup import escape
    from rich.text import Text

    h = doc["host"]
    parts = [Text.from_markup(f"[bold]ctdoctor[/] {escape(h['hostname'] or '?')}  kernel {escape(h['kernel'] or '?')}"
                              f"  source {h['source']}")]
    s = doc["summary"]
    parts.append(Text.from_markup(f"[bold red]{s['critical']} critical[/], [bold yellow]{s['warning']} warning[/], "
                                  f"[cyan]{s['info']} info[/], {s['unknown']} not checked"))
    order = [f for sev in ("critical", "warning", "info") for f in doc["findings"] if f["severity"] == sev]
    if order:
        parts.append(Text(""))
        parts.extend(_overview(order, width))
    detailed = [f for f in order if f["severity"] != "info" or verbose_info]
    if detailed:
        parts.append(Text(""))
        parts.append(Text.from_markup("[bold]details[/]" + ("" if verbose_info or len(detailed) == len(order)
                                                            else " (of the warnings and criticals; --verbose: all)")))
    for group in _same_check_and_netns(detailed):
        parts.extend(_details(group, width))
    if doc["unknown"]:
        parts.append(Text(""))
        parts.append(Text.from_markup("[bold]not checked[/] (not enough data)"))
        for u in doc["unknown"]:
            parts.extend(hang(f"{u['id']}" + (f" (netns {u['netns']})" if u.get("netns") else "") + f": {u['reason']}",
                              width, "  ", "    "))
    for n in doc.get("notes", []):
        parts.extend(hang(f"note: {n}", width, "", "  ", style="dim"))
    if not doc["findings"]:
        parts.append(Text.from_markup("[green]no problems found[/]"))
    return Group(*parts)


SHORT = {"critical": "CRIT", "warning": "WARN", "info": "INFO"}


def _overview(order: list[dict[str, Any]], width: int) -> list[Text]:
    """One entry per check and severity: a line (severity, code, netns or pod, the summary, elided to
    the width) and its first fix as it pastes; a check over several namespaces is one entry."""
    from rich.text import Text

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in order:
        groups.setdefault((f["severity"], f["id"]), []).append(f)
    out = []
    for (sev, code), fs in groups.items():
        head = f"{SHORT[sev]} {code} "
        if len(fs) == 1:
            f = fs[0]
            where = f.get("pod") or f.get("netns")
            text = (f"{where}: " if where and where not in f["summary"] else "") + f["summary"]
        else:
            names = list(dict.fromkeys(x.get("pod") or x.get("netns") or "?" for x in fs))
            if len(names) == 1:  # one namespace, several keys (CT013): what each says
                text = f"{names[0]}: " + "; ".join(x["summary"] for x in fs)
            else:
                shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                many = f"{len(fs)} findings in " if len(fs) > len(names) else ""
                text = f"{many}{len(names)} namespaces ({shown}): {fs[0]['title']}"  # names first: the title may go
        line = Text(head, style=STYLE[sev])
        line.append(fmt.elide_end(text, max(20, width - len(head))))
        out.append(line)
        first = next((x for x in fs[0].get("fixes", []) if x.get("argv")), None)
        if first is not None:
            fix = Fix(first["argv"], shell=first["text"] if first.get("shell") else "")
            prefix = "     $ " if first.get("where", "here") == "here" else "     (on the host) $ "
            for ln in lines(fix, width, prefix):
                out.append(Text(ln, style="green", no_wrap=True, overflow="ignore"))
    return out


def _same_check_and_netns(findings: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Findings of one check in one namespace (CT013 once per key) together, in their order."""
    groups: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    for f in findings:
        groups.setdefault((f["severity"], f["id"], f.get("netns")), []).append(f)
    return list(groups.values())


def _details(group: list[dict[str, Any]], width: int) -> list[Text]:
    """One block per check and namespace: the title once, each finding's summary and evidence, the
    explanation and the fixes once (a fix two findings share is printed once)."""
    from rich.markup import escape
    from rich.text import Text

    f = group[0]
    sev = f["severity"]
    parts: list[Text] = [Text(""), Text.from_markup(f"[{STYLE[sev]}]{WORD[sev]}[/] [bold]{f['id']}[/] {escape(f['title'])}"
                                              + (f" [dim](netns {escape(f['netns'])})[/]" if f.get("netns") else ""))]
    for g in group:
        parts.extend(hang(g["summary"], width, "  ", "    " if len(group) > 1 else "  ",
                          label="-" if len(group) > 1 else ""))
        if g["evidence"]:
            pad = "  " if len(group) > 1 else ""  # under its bullet
            parts.append(Text.from_markup(f"{pad}  [bold]evidence[/]"))
            for k, v in g["evidence"].items():
                if v is None or v == [] or v == {}:
                    continue
                value, source = _ev(k, v)
                parts.extend(with_source(f"{k}: {value}", source, width, pad + "    ", pad + "      "))
    if f["explanation"]:
        parts.extend(hang(f["explanation"], width, "  ", "      ", label="why"))
    seen: set[str] = set()
    fixes = []
    for g in group:
        for x in g.get("fixes") or []:
            if x.get("text", "") + x.get("comment", "") not in seen:
                seen.add(x.get("text", "") + x.get("comment", ""))
                fixes.append(x)
    parts.extend(_fix_lines({**f, "fixes": fixes} if f.get("fixes") is not None else f, width))
    return parts


def _fix_lines(f: dict[str, Any], width: int) -> list[Text]:
    """The fixes, one command per line as it pastes: never wrapped by the terminal (a long command is
    broken between words with \\ continuations); the ones for the host an image came from apart."""
    from rich.text import Text

    fixes = f.get("fixes")
    if fixes is None:  # a report without them (an older JSON): its lines as written
        fixes = [{"argv": None, "text": c, "comment": "", "where": "here"} for c in f.get("fix") or []]
    out = []
    for where, head in (("here", "  [bold]fix[/]"), ("host", "  [bold]fix[/], on the host the image was taken from")):
        mine = [x for x in fixes if x.get("where", "here") == where]
        if not mine:
            continue
        out.append(Text.from_markup(head))
        for x in mine:
            if x.get("comment"):
                out.append(Text("    # " + x["comment"], style="dim"))  # prose: it may wrap
            if x.get("argv") == []:
                continue  # advice alone: its comment said it
            cmd = lines(Fix(x["argv"], shell=x["text"] if x.get("shell") else ""), width) if x.get("argv") \
                else ["    $ " + x["text"]]
            for ln in cmd:
                out.append(Text(ln, style="green", no_wrap=True, overflow="ignore"))
    return out


_DMESG_STAMP = re.compile(r"^\d+\.\d{6}$")


def _plain(x: Any) -> str:
    """A value as a person reads it: no Python None/True/False on screen, no raw long floats."""
    if x is None:
        return "unknown"
    if isinstance(x, bool):
        return fmt.yesno(x)
    if isinstance(x, float):
        return fmt.num(x)  # an int stays as written: it may be a port, an inode or a mark
    if isinstance(x, str) and _DMESG_STAMP.match(x):  # dmesg's seconds since boot
        return f"{float(x):,.0f} s after boot"
    if isinstance(x, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return ", ".join(_plain(v) for v in x)
    return str(x)


PERCENT_KEYS = {"fill", "share", "peak_fill", "ratio_of_max", "fill_ratio"}


def _ev(key: str, v: Any) -> tuple[str, str | None]:
    """An evidence item as (value, where it was read): a fraction under a fill or share key as a
    percentage, lists of records as ``k=v`` groups, never a Python repr."""
    if isinstance(v, dict) and "value" in v:
        inner = v["value"]
        value = fmt.pct(inner) if key in PERCENT_KEYS and isinstance(inner, float) and 0 <= inner <= 1 \
            else _plain(inner)
        return value, str(v["source"]) if v.get("source") else None
    if key in PERCENT_KEYS and isinstance(v, float) and 0 <= v <= 1:
        return fmt.pct(v), None
    if isinstance(v, list):
        if v and isinstance(v[0], dict):
            return "; ".join(", ".join(f"{k}={_plain(x)}" for k, x in item.items()) for item in v[:5]), None
        return ", ".join(_plain(x) for x in v[:8]), None
    if isinstance(v, dict):
        return ", ".join(f"{k}={_plain(x)}" for k, x in v.items() if x is not None), None
    return _plain(v), None
