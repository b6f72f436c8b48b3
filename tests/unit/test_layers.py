"""The architecture of DESIGN.md §1, held by the imports: checks see facts, sources see nothing above them."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parent.parent.parent / "src" / "ctdoctor"
# what sources/ may import from ctdoctor: itself and the neutral bottom modules
BOTTOM = {"ctdoctor.errors", "ctdoctor.textsafe", "ctdoctor.kernel", "ctdoctor.scan", "ctdoctor.accel",
          "ctdoctor._fastscan"}


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


def test_checks_import_neither_sources_nor_render_nor_the_cli():
    bad = {}
    for p in (SRC / "checks").glob("*.py"):
        wrong = {m for m in imports(p) if m.startswith(("ctdoctor.sources", "ctdoctor.render", "ctdoctor.cli",
                                                          "ctdoctor.commands", "ctdoctor.facts"))}
        if wrong:
            bad[p.name] = sorted(wrong)
    assert not bad, bad


def test_sources_import_nothing_above_them():
    bad = {}
    for p in (SRC / "sources").glob("*.py"):
        wrong = {m for m in imports(p) if not m.startswith("ctdoctor.sources") and m not in BOTTOM}
        if wrong:
            bad[p.name] = sorted(wrong)
    assert not bad, bad


def test_the_bottom_modules_import_no_other_ctdoctor_module():
    for name in ("errors", "textsafe", "kernel", "scan", "accel"):
        assert imports(SRC / f"{name}.py") <= BOTTOM, name


def test_a_check_never_reads_the_host():
    """No check touches a root, a file or a subprocess: it gets facts through its Context."""
    for p in (SRC / "checks").glob("*.py"):
        text = p.read_text()
        for word in ("ctx.root", ".read_text(", "open(", "subprocess", "os.listdir"):
            assert word not in text, f"{p.name}: {word}"


def test_distro_matches_whole_ids(tmp_path):
    """Solus (ID=solus) holds "ol" but is not Oracle Linux; Oracle Linux (ID="ol") is RHEL-like."""
    from ctdoctor.facts import HostFacts
    from ctdoctor.snapshot import Snapshot
    from ctdoctor.sources.hostroot import HostRoot

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

    from ctdoctor import snapshot
    from ctdoctor.errors import Failure
    from ctdoctor.export import collect
    from ctdoctor.sources import netns as nsmod

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
