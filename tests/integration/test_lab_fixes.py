"""Every command the doctor prints for the lab's incidents, run as the user would paste it, against the
live netns it names (issue 18): the ctdoctor ones run (a writer as its dry run: apply without --yes,
flush --dry-run, recover --dry-run, notrack without --apply; guard --once would change this host's
settings and is only parsed), every shell line parses with bash -n."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import needs_kernel, run_cli

pytestmark = [needs_kernel, pytest.mark.kernel]
SCENARIOS = ["table-full", "early-drop", "time-wait-pileup", "syn-unreplied", "nat-loopback", "untracked",
             "count-mismatch", "gc-lag"]


def dry(argv: list[str]) -> list[str] | None:
    """The command as a dry run (None: it cannot run here without changing the host)."""
    sub = next((a for a in argv[1:] if not a.startswith("-") and a not in _values(argv)), "doctor")
    if sub == "apply":
        return [a for a in argv if a != "--yes"]
    if sub == "flush":
        return argv if "--dry-run" in argv else [*argv, "--dry-run"]
    if sub == "recover":
        return argv if "--dry-run" in argv else [*argv, "--dry-run"]
    if sub == "notrack":
        return [a for a in argv if a != "--apply"]
    if sub in ("guard", "lab", "record", "exporter"):
        return None
    return argv


def _values(argv: list[str]) -> set[str]:
    """The words that are values of ctdoctor's global options (not subcommands)."""
    out = set()
    for i, a in enumerate(argv[:-1]):
        if a in ("--netns", "--root", "--format", "--host-root", "--interval", "--only", "--skip"):
            out.add(argv[i + 1])
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_printed_command_of_a_lab_incident_runs(lab, scenario):
    run = lab(scenario)
    _rc, out, err = run_cli("--netns", run.netns.name, "--format", "json", timeout=120)
    assert out.strip(), err
    doc = json.loads(out)
    fixes = [(f["id"], x) for f in doc["findings"] for x in f["fixes"] if x["argv"]]

    for code, x in fixes:
        p = subprocess.run(["bash", "-n", "-c", x["text"]], capture_output=True, text=True)
        assert p.returncode == 0, (scenario, code, x["text"], p.stderr)
        if x["argv"][0] != "ctdoctor":
            continue
        argv = dry(x["argv"])
        if argv is None:
            continue
        rc2, o2, e2 = run_cli(*argv[1:], timeout=120)
        assert rc2 in (0, 1, 2, 3) and "error:" not in e2 and "usage:" not in e2, (scenario, code, argv, e2[-300:])
        assert "nothing to apply" not in o2 + e2

    assert doc["findings"], f"{scenario}: the doctor found nothing"


CONNECT = ("import socket\nl=socket.socket()\nl.bind(('127.0.0.1',0))\nl.listen()\n"
           "c=socket.socket()\nc.settimeout(2)\nprint('ok' if c.connect_ex(l.getsockname())==0 else 'timeout')")


def test_pasting_the_table_full_fix_lets_new_connections_in(lab):
    """The table-full incident resolved by what the doctor prints, pasted in order: the live
    `sysctl -w` (global: this test restores the host's value afterwards); the persisting `ctdoctor
    apply` was checked as a dry run above (it would write this host's /etc)."""
    run = lab("table-full")
    ns = run.netns.name
    assert _connect(run.netns) == "timeout"  # the incident
    _rc, out, _err = run_cli("--netns", ns, "--format", "json", timeout=120)
    (f,) = [f for f in json.loads(out)["findings"] if f["id"] == "CT001" and f["netns"] == ns]
    live = [x["argv"] for x in f["fixes"] if x["argv"][:2] == ["sysctl", "-w"]]
    assert len(live) == 1
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as fh:
        before = fh.read().strip()
    try:
        p = subprocess.run(live[0], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert _connect(run.netns) == "ok"  # resolved
    finally:
        with open("/proc/sys/net/netfilter/nf_conntrack_max", "w") as fh:
            fh.write(before)


def _connect(netns) -> str:
    return subprocess.run(["ip", "netns", "exec", netns.name, "python3", "-c", CONNECT], capture_output=True,
                          text=True, timeout=30).stdout.strip()
