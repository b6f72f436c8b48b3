"""The architecture of DESIGN.md §1, held by the imports: checks see facts, sources see nothing above them."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parent.parent.parent / "src" / "ctdoctor"
# Each room and the rooms it may import (besides itself). A file's path tells what it may touch:
# model/ and listing/ are pure, sources/ reads the machine or an image, write/ changes the machine.
MAY_IMPORT = {
    "model": {"errors"},
    "listing": {"model", "errors"},
    "sources": {"listing", "model", "errors"},
    "write": {"sources", "listing", "model", "errors"},
    "diagnose/checks": {"model", "errors"},
    "diagnose": {"diagnose/checks", "sources", "listing", "model", "errors"},
    "top": {"sources", "listing", "model", "errors"},
    "monitor": {"diagnose", "top", "bundle", "sources", "listing", "model", "errors", "cleanup"},
    "bundle": {"sources", "listing", "model", "errors"},
    "render": {"model", "errors"},
}


# Moves still under way (issue 21): each entry goes when its file stops reaching up.
PENDING: dict[str, set[str]] = {
    "sources/live.py": {"ctdoctor.monitor.metrics"},
    "diagnose/checks/ct001_table_full.py": {"ctdoctor.diagnose.plan"},
    "diagnose/checks/ct018_netns_near_max.py": {"ctdoctor.diagnose.plan"},
    "diagnose/checks/base.py": {"ctdoctor.sources.snapshot"},
    "diagnose/checks/ct007_unload_hazard.py": {"ctdoctor.diagnose.status"},
    "diagnose/checks/ct006_settings_drift.py": {"ctdoctor.diagnose.status"},
    "diagnose/facts.py": {"ctdoctor.top.query", "ctdoctor.top.rows"},
}


def room_of(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[:2] == ["diagnose", "checks"]:
        return "diagnose/checks"
    return parts[0] if parts else ""


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ctdoctor":
                out |= {f"ctdoctor.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return {m for m in out if m.startswith("ctdoctor")}


def test_each_room_imports_only_the_rooms_below_it():
    bad = {}
    for room, allowed in MAY_IMPORT.items():
        for p in (SRC / room).rglob("*.py"):
            if room == "diagnose" and "checks" in p.parts:
                continue
            wrong = {m for m in imports(p) if room_of(m) not in allowed | {room} | {"__version__"}}
            wrong -= PENDING.get(str(p.relative_to(SRC)), set())
            if wrong:
                bad[str(p.relative_to(SRC))] = sorted(wrong)
    assert not bad, bad


def test_a_check_never_reads_the_host():
    """No check touches a root, a file or a subprocess: it gets facts through its Context."""
    for p in (SRC / "diagnose" / "checks").glob("*.py"):
        text = p.read_text()
        for word in ("ctx.root", ".read_text(", "open(", "subprocess", "os.listdir"):
            assert word not in text, f"{p.name}: {word}"


def test_distro_matches_whole_ids(tmp_path):
    """Solus (ID=solus) holds "ol" but is not Oracle Linux; Oracle Linux (ID="ol") is RHEL-like."""
    from ctdoctor.diagnose.facts import HostFacts
    from ctdoctor.sources.hostroot import HostRoot
    from ctdoctor.sources.snapshot import Snapshot

    def distro(os_release: str) -> str:
        (tmp_path / "etc").mkdir(exist_ok=True)
        (tmp_path / "etc/os-release").write_text(os_release)
        root = HostRoot(tmp_path, "bundle", str(tmp_path))
        return HostFacts(Snapshot("bundle", str(tmp_path)), root).distro()

    assert distro('NAME="Solus"\nID="solus"\n') == "other"
    assert distro('NAME="Oracle Linux Server"\nID="ol"\nID_LIKE="fedora"\n') == "rhel"
    assert distro('ID=ubuntu\nID_LIKE=debian\n') == "debian"
    assert distro('ID="rocky"\nID_LIKE="rhel centos fedora"\n') == "rhel"


def test_preconditions_are_declared_and_enforced_in_one_place():
    """Every command that needs the live kernel or root says so in requires(); the CLI refuses
    before the command runs (one line, exit 2)."""
    import argparse

    from ctdoctor.commands import collect, exporter, flush, record, top
    from ctdoctor.commands.common import Needs, enforce
    from ctdoctor.errors import NeedsLiveKernel

    image = argparse.Namespace(root="/some/image", rate=True)
    for mod in (collect, exporter, flush, record):
        needs = mod.requires(argparse.Namespace())
        assert needs.live, mod.__name__
        try:
            enforce(needs, image)
        except NeedsLiveKernel as e:
            assert "running kernel" in str(e)
        else:
            raise AssertionError(f"{mod.__name__} ran on a host image")
    assert top.requires(argparse.Namespace(rate=False)) == Needs()
    assert top.requires(argparse.Namespace(rate=True)).root


def test_a_netns_deleted_while_it_is_read_is_left_out_with_a_note(monkeypatch, tmp_path):
    """A pod deleted between discovery and reading: the doctor/top/collect go on without it and say so,
    but a failure inside a netns that still exists is still an error."""
    import pytest

    from ctdoctor.bundle import collect
    from ctdoctor.errors import Failure
    from ctdoctor.sources import netns as nsmod
    from ctdoctor.sources import snapshot

    ghost = nsmod.NetnsRef("pod-gone", 4026599999, str(tmp_path / "no-such-netns"), "ip netns")
    alive_path = tmp_path / "alive"
    alive_path.write_text("")
    alive = nsmod.NetnsRef("pod-alive", alive_path.stat().st_ino, str(alive_path), "ip netns")

    def boom(ref, fn, *a):
        raise Failure(f"reading inside netns {ref.name} failed: FileNotFoundError")

    monkeypatch.setattr(nsmod, "call_in", boom)
    notes: list[str] = []
    got = snapshot._read_all([(snapshot.LiveNetnsView(ghost), ghost.inode, "ip netns")], notes, with_rules=False)
    assert got == [] and notes == ["netns pod-gone went away while it was read: left out"]
    assert collect._read_in(ghost, ["proc/net/stat/nf_conntrack"], []) is None
    with pytest.raises(Failure):
        snapshot._read_all([(snapshot.LiveNetnsView(alive), alive.inode, "ip netns")], [], with_rules=False)
    with pytest.raises(Failure):
        collect._read_in(alive, ["proc/net/stat/nf_conntrack"], [])
