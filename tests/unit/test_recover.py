"""recover never claims what did not happen: modprobe.d traps are found before anything is loaded
(dry run lists them with the command that disables each), and a modprobe that "succeeds" by running
an install line instead is caught. Images: tests/realworld (a real ECS host's modprobe.d)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from ctdoctor.commands import recover
from ctdoctor.errors import Failure
from ctdoctor.write import recover as recovery
from tests.conftest import run_cli

ECS = Path(__file__).parent.parent / "realworld" / "amazonlinux-ecs-conntrack-disabled-modprobe"


def _traps(out: str) -> list[tuple[str, str]]:
    """(sentence, command) per trap: the sentence re-joined from its wrapped lines, the command from its
    \\ continuations (or after "disable it first: " when it all fits one line)."""
    found: list[tuple[list[str], list[str]]] = []
    for ln in out.splitlines():
        if ln.startswith("trap for "):
            found.append(([ln], []))
        elif found and ln.startswith("  $ "):
            found[-1][1].append(ln[4:])
        elif found and ln.startswith(" ") and found[-1][1]:
            found[-1][1].append(ln.strip())
        elif found and ln.startswith("  ") and not found[-1][1]:
            found[-1][0].append(ln.strip())
    out_: list[tuple[str, str]] = []
    for said, cmd in found:
        text = " ".join(said)
        if cmd:
            out_.append((text.removesuffix(" disable it first:").removesuffix(";"),
                         " ".join(c.removesuffix(" \\") for c in cmd)))
        else:
            head, _, tail = text.partition("; disable it first: ")
            late = " (loaded now; it bites at the next load)"
            out_.append((head + (late if tail.endswith(late) else ""), tail.removesuffix(late)))
    return out_


@pytest.mark.parametrize("width", ["80", "400"])
def test_dry_run_lists_every_trap_with_the_command_that_disables_it(width):
    rc, out, err = run_cli("--root", str(ECS), "recover", "--dry-run", env={"COLUMNS": width})
    assert rc == 0, err
    traps = _traps(out)
    assert len(traps) == 4
    assert ("trap for nf_conntrack: /etc/modprobe.d/nf_conntrack.conf:1: install nf_conntrack /bin/true",
            "sed -i '1s/^/# disabled by ctdoctor advice: /' /etc/modprobe.d/nf_conntrack.conf") in traps
    assert all(len(ln) <= int(width) for ln in out.splitlines())
    for _said, cmd in traps:  # the command it prints names a file of that host, and parses
        assert (ECS / cmd.rsplit(" ", 1)[1].lstrip("/")).is_file()
        assert subprocess.run(["bash", "-n", "-c", cmd]).returncode == 0


def _live_like(monkeypatch, image: Path, loaded_after: bool, trap_free: bool = False):
    """Run recover's real path on an image's facts as if they were this host's: the snapshot is the
    image's, modprobe, /sys, sysctl writes and the tracking probe are recorded instead of done."""
    from ctdoctor.sources import snapshot
    from ctdoctor.sources.hostroot import HostRoot

    snap = snapshot.build(HostRoot.open(str(image)), None, interval=None, with_log=False)
    monkeypatch.setattr(snapshot, "build", lambda *a, **k: snap)
    monkeypatch.setattr(recover, "open_root", lambda args: argparse.Namespace(is_live=True))
    calls: list[list[str]] = []

    def fake_run(argv, timeout=30):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(recovery, "_run", fake_run)
    monkeypatch.setattr(recovery, "loaded", lambda m: loaded_after)
    monkeypatch.setattr(recovery, "verify", lambda: (True, "probe seen"))
    monkeypatch.setattr("ctdoctor.write.files.write_sysctl", lambda root, k, v: calls.append(["sysctl", k, v]))
    monkeypatch.setattr("shutil.which", lambda name: "/sbin/" + name)
    if trap_free:
        monkeypatch.setattr(recover, "traps", lambda snap, mods: [])
    return calls


def test_a_trap_stops_recover_before_it_loads_anything(monkeypatch):
    calls = _live_like(monkeypatch, ECS, loaded_after=True)
    with pytest.raises(Failure, match=r"not loading: .*blacklist nf_conntrack; disable it first: sed -i"):
        recover.run(argparse.Namespace(dry_run=False, root=str(ECS), netns=None, format=None))
    assert not calls  # no modprobe ran


def test_a_modprobe_that_reports_success_without_loading_is_a_failure(monkeypatch):
    calls = _live_like(monkeypatch, ECS, loaded_after=False, trap_free=True)
    with pytest.raises(Failure, match="modprobe nf_conntrack failed: modprobe returned success but the module "
                                      "is not loaded"):
        recover.run(argparse.Namespace(dry_run=False, root=str(ECS), netns=None, format=None))
    assert ["modprobe", "nf_conntrack"] in calls
