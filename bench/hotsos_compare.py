"""Compare ctdoctor with canonical's hotsos on the real-world corpus (issue 17).

    .venv/bin/python bench/hotsos_compare.py [--cases NAME,...] [--json FILE] [--timeout S]

For every case folder of tests/realworld/ (an extracted-sosreport layout with EXPECTED.json) it
runs both tools and prints a Markdown table with one verdict per tool:

  * ctdoctor: `ctdoctor --root CASE --format json`; its alarms are the findings at warning or
    critical. A problem case is "found" when one of them has a code listed in EXPECTED findings.
  * hotsos: `hotsos --all-logs --format json --machine-readable --quiet CASE`; its alarms are the
    entries of the `potential-issues` and known-bugs (`bugs-detected`) sections (any plugin, any
    level). Only the ones whose text is about conntrack / netfilter count; the others are listed
    apart. Other conntrack-related text anywhere else in its summary is listed too (not counted).
  * a healthy case (EXPECTED "healthy": true) with any counted alarm is a false alarm; no alarm
    is "quiet". A problem case without a matching alarm is "missed".

hotsos is installed on first use into its own venv, bench/data/hotsos-venv (git-ignored), with
`python3 -m venv` and `pip install hotsos`; if that fails the script prints one line and exits 2.
It exits 0 whenever the comparison ran, whatever the comparison says.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = ROOT / "tests" / "realworld"
CTDOCTOR = ROOT / ".venv" / "bin" / "ctdoctor"
HOTSOS_VENV = HERE / "data" / "hotsos-venv"
HOTSOS = HOTSOS_VENV / "bin" / "hotsos"
HOTSOS_ARGS = ["--all-logs", "--format", "json", "--machine-readable", "--quiet"]

ALARM_LEVELS = ("warning", "critical")
ISSUE_SECTIONS = ("potential-issues", "bugs-detected", "known-bugs")  # hotsos 1.x says bugs-detected
# What makes a hotsos issue (or any other line of its summary) relevant to this comparison.
RELEVANT = re.compile(
    r"conntrack|ip_conntrack|nf_conntrack|table full|netfilter|iptables|ip6tables|nftables"
    r"|nf_tables|\bnft\b|\bnat\b|masquerad|notrack|expectation table",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------- setup

def ensure_hotsos() -> None:
    """Create bench/data/hotsos-venv and install hotsos into it unless it is already there."""
    if HOTSOS.exists():
        return
    python3 = shutil.which("python3") or sys.executable
    steps = []
    if not (HOTSOS_VENV / "bin" / "python").exists():
        steps.append([python3, "-m", "venv", str(HOTSOS_VENV)])
    steps.append([str(HOTSOS_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "hotsos"])
    print(f"installing hotsos into {HOTSOS_VENV.relative_to(ROOT)} ...", file=sys.stderr)
    for argv in steps:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            fail_install(f"{' '.join(argv[:4])}: {e}")
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["?"])[-1]
            fail_install(f"{' '.join(argv[:4])} exited {p.returncode}: {last}")
    if not HOTSOS.exists():
        fail_install(f"pip install hotsos succeeded but {HOTSOS} does not exist")


def fail_install(why: str) -> None:
    print(f"hotsos_compare: cannot install hotsos ({why})", file=sys.stderr)
    sys.exit(2)


def version_of(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    return (p.stdout.strip() or p.stderr.strip() or f"unknown (exit {p.returncode})").splitlines()[0]


# --------------------------------------------------------------------------- running the tools

def run_json(argv: list[str], timeout: float, ok_codes: tuple[int, ...]) -> tuple[dict | None, str]:
    """Run argv, return (parsed stdout JSON, error text); error text is "" on success."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    except OSError as e:
        return None, str(e)
    if p.returncode not in ok_codes:
        tail = (p.stderr.strip().splitlines() or ["no stderr"])[-1]
        return None, f"exit {p.returncode}: {tail}"
    out = p.stdout
    start = out.find("{")  # hotsos may print an 'INFO: analysing ...' line before the JSON
    if start < 0:
        return None, f"no JSON on stdout (exit {p.returncode})"
    try:
        return json.loads(out[start:]), ""
    except json.JSONDecodeError as e:
        return None, f"bad JSON on stdout: {e}"


def run_ctdoctor(case: Path, timeout: float) -> dict:
    data, err = run_json([str(CTDOCTOR), "--root", str(case), "--format", "json"], timeout, (0, 1, 2, 3))
    if data is None:
        return {"error": err}
    findings = [
        {"id": f.get("id"), "severity": f.get("severity"), "netns": f.get("netns"),
         "summary": f.get("summary", "")}
        for f in data.get("findings", [])
    ]
    return {
        "error": "",
        "findings": findings,
        "alarms": [f for f in findings if f["severity"] in ALARM_LEVELS],
        "summary": data.get("summary", {}),
    }


def hotsos_issues(node, plugin: str = "", section: str = "") -> list[dict]:
    """Every entry under a potential-issues / bugs-detected key, whatever its shape."""
    found = []
    if isinstance(node, dict):
        if section:
            # not machine-readable shape: {IssueTypes: [messages]} or a bug {id, message, ...}
            if "message" in node:
                found.append({"section": section, "plugin": plugin,
                              "type": str(node.get("type") or node.get("id") or ""),
                              "message": str(node["message"])})
                return found
            for k, v in node.items():
                for item in hotsos_issues(v, plugin, section):
                    item["type"] = item["type"] or str(k)
                    found.append(item)
            return found
        for k, v in node.items():
            if k in ISSUE_SECTIONS:
                found += hotsos_issues(v, plugin, k)
            else:
                found += hotsos_issues(v, plugin or k, "")
    elif isinstance(node, list):
        for v in node:
            found += hotsos_issues(v, plugin, section)
    elif section and node is not None:
        found.append({"section": section, "plugin": plugin, "type": "", "message": str(node)})
    return found


def other_mentions(node, path: str = "") -> list[str]:
    """Conntrack-related keys/values outside the issue sections, as 'a.b.c: value'."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ISSUE_SECTIONS:
                continue
            sub = f"{path}.{k}" if path else str(k)
            if RELEVANT.search(str(k)) and not isinstance(v, (dict, list)):
                out.append(f"{sub}: {v}")
            elif RELEVANT.search(str(k)):
                out.append(f"{sub}: {json.dumps(v)[:200]}")
            else:
                out += other_mentions(v, sub)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += other_mentions(v, f"{path}[{i}]")
    elif node is not None and RELEVANT.search(str(node)):
        out.append(f"{path}: {node}")
    return out


def run_hotsos(case: Path, timeout: float) -> dict:
    data, err = run_json([str(HOTSOS), *HOTSOS_ARGS, str(case)], timeout, (0,))
    if data is None:
        return {"error": err}
    issues = hotsos_issues(data)
    for i in issues:
        i["relevant"] = bool(RELEVANT.search(f"{i['type']} {i['message']}"))
    return {
        "error": "",
        "plugins": sorted(k for k in data if k != "hotsos"),
        "issues": issues,
        "relevant": [i for i in issues if i["relevant"]],
        "unrelated": [i for i in issues if not i["relevant"]],
        "other_mentions": other_mentions(data),
    }


# --------------------------------------------------------------------------- verdicts

def ctdoctor_verdict(expected: dict, ct: dict) -> str:
    if ct["error"]:
        return "error"
    if expected["healthy"]:
        return "false alarm" if ct["alarms"] else "quiet"
    wanted = set(expected.get("findings", {}))
    return "found" if any(a["id"] in wanted for a in ct["alarms"]) else "missed"


def hotsos_verdict(expected: dict, hs: dict) -> str:
    if hs["error"]:
        return "error"
    if expected["healthy"]:
        return "false alarm" if hs["relevant"] else "quiet"
    return "found" if hs["relevant"] else "missed"


def ctdoctor_notes(expected: dict, ct: dict) -> list[str]:
    """Where ctdoctor differs from EXPECTED.json (beyond the found/missed verdict)."""
    if ct["error"]:
        return [f"error: {ct['error']}"]
    notes = []
    got = {}
    for f in ct["findings"]:
        got.setdefault(f["id"], []).append(f)
    for code, sev in expected.get("findings", {}).items():
        have = [f for f in got.get(code, []) if f["severity"] in ALARM_LEVELS]
        if not have:
            other = ", ".join(f"{f['severity']}" for f in got.get(code, [])) or "not raised"
            notes.append(f"expected {code} {sev}: {other}")
        elif not any(f["severity"] == sev for f in have):
            notes.append(f"expected {code} {sev}, got {have[0]['severity']}: {have[0]['summary']}")
    for f in ct["findings"]:
        if f["id"] in expected.get("not", []):
            notes.append(f"raised {f['id']} {f['severity']} listed under 'not': {f['summary']}")
        elif f["severity"] in ALARM_LEVELS and f["id"] not in expected.get("findings", {}):
            notes.append(f"unexpected {f['id']} {f['severity']}: {f['summary']}")
    for code in expected.get("info", []):
        if code not in got:
            notes.append(f"expected {code} at info: not raised")
    return notes


# --------------------------------------------------------------------------- output

def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "–"


def expected_cell(expected: dict) -> str:
    if expected["healthy"]:
        return "healthy" + (f" (info: {', '.join(expected['info'])})" if expected.get("info") else "")
    return ", ".join(f"{c} {s}" for c, s in expected.get("findings", {}).items()) or "problem"


def ct_cell(ct: dict) -> str:
    if ct["error"]:
        return f"error: {ct['error']}"
    return ", ".join(f"{a['id']} {a['severity']}" for a in ct["alarms"])


def hs_cell(hs: dict) -> str:
    if hs["error"]:
        return f"error: {hs['error']}"
    return "; ".join(f"{i['type']}: {i['message']}" if i["type"] else i["message"] for i in hs["relevant"])


def report(results: list[dict], versions: dict) -> str:
    lines = [
        "| case | expected | ctdoctor alarms | hotsos relevant issues | ctdoctor | hotsos |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append("| " + " | ".join([
            cell(r["case"]), cell(expected_cell(r["expected"])), cell(ct_cell(r["ctdoctor"])),
            cell(hs_cell(r["hotsos"])), r["verdict"]["ctdoctor"], r["verdict"]["hotsos"],
        ]) + " |")

    problems = [r for r in results if not r["expected"]["healthy"]]
    healthy = [r for r in results if r["expected"]["healthy"]]
    lines.append("")
    lines.append("Totals:")
    lines.append("")
    for tool in ("ctdoctor", "hotsos"):
        found = sum(r["verdict"][tool] == "found" for r in problems)
        false = sum(r["verdict"][tool] == "false alarm" for r in healthy)
        errors = sum(r["verdict"][tool] == "error" for r in results)
        extra = f"; {errors} case(s) where it failed to run" if errors else ""
        lines.append(f"- {tool}: problems found {found} of {len(problems)}; "
                     f"false alarms on healthy cases {false} of {len(healthy)}{extra}")
    lines.append("")
    lines.append(f"- ctdoctor version: `{versions['ctdoctor']}`")
    lines.append(f"- hotsos version: `{versions['hotsos']}` "
                 f"(run as `hotsos {' '.join(HOTSOS_ARGS)} CASE`)")

    notes = [(r["case"], n) for r in results for n in ctdoctor_notes(r["expected"], r["ctdoctor"])]
    lines += ["", "ctdoctor against EXPECTED.json beyond the verdict (codes, levels, 'not' and 'info' lists):", ""]
    lines += [f"- {c}: {cell(n)}" for c, n in notes] or ["- none"]

    unrelated = [(r["case"], i) for r in results if not r["hotsos"]["error"] for i in r["hotsos"]["unrelated"]]
    lines += ["", "hotsos issues not related to conntrack (not counted):", ""]
    lines += [f"- {c}: {i['section']} {i['type']}: {cell(i['message'])}" for c, i in unrelated] or ["- none"]

    mentions = [(r["case"], m) for r in results if not r["hotsos"]["error"] for m in r["hotsos"]["other_mentions"]]
    lines += ["", "Other conntrack/netfilter mentions elsewhere in hotsos's summary (not counted):", ""]
    lines += [f"- {c}: {cell(m)}" for c, m in mentions] or ["- none"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", help="comma-separated case folder names (default: all)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw per-case results here")
    ap.add_argument("--timeout", type=float, default=120.0, help="per tool and case, seconds (120)")
    args = ap.parse_args()

    all_cases = sorted(p.parent for p in CORPUS.glob("*/EXPECTED.json"))
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in wanted if not (CORPUS / c / "EXPECTED.json").is_file()]
        if unknown:
            print(f"hotsos_compare: no such case in {CORPUS}: {', '.join(unknown)}", file=sys.stderr)
            return 2
        cases = [CORPUS / c for c in wanted]
    else:
        cases = all_cases
    if not CTDOCTOR.exists():
        print(f"hotsos_compare: {CTDOCTOR} is missing (run `make venv`)", file=sys.stderr)
        return 2
    ensure_hotsos()

    versions = {"ctdoctor": version_of([str(CTDOCTOR), "--version"]),
                "hotsos": version_of([str(HOTSOS), "--version"])}
    started = datetime.datetime.now(datetime.UTC)
    results = []
    for case in cases:
        print(f"  {case.name} ...", file=sys.stderr)
        expected = json.loads((case / "EXPECTED.json").read_text())
        r = {"case": case.name,
             "expected": {k: expected.get(k) for k in ("healthy", "severity", "findings", "not", "info")},
             "ctdoctor": run_ctdoctor(case, args.timeout),
             "hotsos": run_hotsos(case, args.timeout)}
        r["expected"]["findings"] = r["expected"]["findings"] or {}
        r["expected"]["not"] = r["expected"]["not"] or []
        r["expected"]["info"] = r["expected"]["info"] or []
        r["verdict"] = {"ctdoctor": ctdoctor_verdict(r["expected"], r["ctdoctor"]),
                        "hotsos": hotsos_verdict(r["expected"], r["hotsos"])}
        results.append(r)

    print(f"Run {started:%Y-%m-%d %H:%M} UTC on {len(results)} case(s) of tests/realworld/.")
    print()
    print(report(results, versions))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"started": started.isoformat(), "versions": versions, "hotsos_args": HOTSOS_ARGS,
             "cases": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
