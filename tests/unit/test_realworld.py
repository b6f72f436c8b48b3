"""The real-world corpus (tests/realworld/, sources in its README): every case is read as an on-call
engineer reading the same files would, whose verdict is in the case's EXPECTED.json (worked out by
hand, never from ctdoctor's output). Healthy hosts get nothing at WARNING or above."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli

CORPUS = Path(__file__).parent.parent / "realworld"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "EXPECTED.json").is_file())
EXIT = {"ok": {0, 3}, "info": {0, 3}, "warning": {1}, "critical": {2}}


def test_the_corpus_is_what_issue_17_asks_for():
    expected = [json.loads((CORPUS / c / "EXPECTED.json").read_text()) for c in CASES]
    assert len(CASES) >= 30
    assert sum(e["healthy"] for e in expected) >= len(CASES) / 3
    readme = (CORPUS / "README.md").read_text()
    for c in CASES:
        assert f"- {c}:" in readme and "Source:" in readme.split(f"- {c}:", 1)[1].split("\n", 1)[0], c


@pytest.mark.parametrize("case", CASES)
def test_real_capture_is_read_right(case):
    exp = json.loads((CORPUS / case / "EXPECTED.json").read_text())
    rc, out, err = run_cli("--root", str(CORPUS / case), "--format", "json")
    assert "Traceback" not in err and out.strip(), err
    doc = json.loads(out)
    raised = {f["id"]: f["severity"] for f in doc["findings"] if f["severity"] in ("warning", "critical")}
    # the worst severity per code, as the expected verdict names one per code
    for f in doc["findings"]:
        if f["severity"] == "critical":
            raised[f["id"]] = "critical"
    detail = "; ".join(f"{f['id']} {f['severity']}: {f['summary']}" for f in doc["findings"]
                       if f["severity"] != "info")
    assert raised == exp["findings"], f"{case}: expected {exp['findings']}, got {raised} ({detail})"
    for code in exp.get("not", []):
        assert code not in raised, f"{case}: {code} must not be raised ({detail})"
    for code in exp.get("info", []):
        assert code in {f["id"] for f in doc["findings"]}, f"{case}: {code} expected at info"
    assert rc in EXIT[exp["severity"]], f"{case}: exit {rc} for an expected {exp['severity']}"


@pytest.mark.parametrize("case", CASES)
def test_text_report_has_no_python_on_screen(case):
    _rc, out, err = run_cli("--root", str(CORPUS / case), env={"COLUMNS": "80"})
    assert "Traceback" not in err and out.strip()
    bad = [ln for ln in out.splitlines() if re.search(r"\{'|\('|\[\{|\bNone\b|\bTrue\b|\bFalse\b", ln)]
    assert not bad, bad
    # past 80 columns only a fix line that is one shell word (a sed expression): never cut, never wrapped
    wide = [ln for ln in out.splitlines() if len(ln) > 80]
    from ctdoctor.model.fixes import words

    assert all(len(words(ln.strip().removeprefix("$ ").removesuffix(" \\"))) == 1 for ln in wide), wide
    # each fix line pastes: joined at its continuations, bash reads it as a command
    cmds, cur = [], ""
    for ln in out.splitlines():
        t = ln.strip()
        if cur or t.startswith("$ "):
            cur += (t[2:] if t.startswith("$ ") and not cur else t)
            if cur.endswith(" \\"):
                cur = cur[:-1]
                continue
            cmds.append(cur)
            cur = ""
    for c in cmds:
        p = subprocess.run(["bash", "-n", "-c", c], capture_output=True, text=True)
        assert p.returncode == 0, (c, p.stderr)
