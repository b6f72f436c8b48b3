"""The rooms of docs/design.md, held by the imports and by what each file may touch."""

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
    "monitor": {"diagnose", "top", "bundle", "write", "sources", "listing", "model", "errors", "cleanup"},
    "bundle": {"sources", "listing", "model", "errors"},
    "render": {"model", "errors"},
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
            if wrong:
                bad[str(p.relative_to(SRC))] = sorted(wrong)
    assert not bad, bad


def test_a_check_never_reads_the_host():
    """No check touches a root, a file or a subprocess: it gets facts through its Context."""
    for p in (SRC / "diagnose" / "checks").glob("*.py"):
        text = p.read_text()
        for word in ("ctx.root", ".read_text(", "open(", "subprocess", "os.listdir", ".view", "open_entries",
                     "ctx.reader", "ctdoctor.sources"):
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

    from ctdoctor.errors import Failure
    from ctdoctor.sources import capture, snapshot, views
    from ctdoctor.sources import netns as nsmod

    ghost = nsmod.NetnsRef("pod-gone", 4026599999, str(tmp_path / "no-such-netns"), "ip netns")
    alive_path = tmp_path / "alive"
    alive_path.write_text("")
    alive = nsmod.NetnsRef("pod-alive", alive_path.stat().st_ino, str(alive_path), "ip netns")

    def boom(ref, fn, *a):
        raise Failure(f"reading inside netns {ref.name} failed: FileNotFoundError")

    monkeypatch.setattr(nsmod, "call_in", boom)
    notes: list[str] = []
    got = snapshot._read_all([(views.LiveNetnsView(ghost), ghost.inode, "ip netns")], notes, with_rules=False)
    assert got == [] and notes == ["netns pod-gone went away while it was read: left out"]
    assert capture.read_in(ghost, ["proc/net/stat/nf_conntrack"], []) is None
    with pytest.raises(Failure):
        snapshot._read_all([(views.LiveNetnsView(alive), alive.inode, "ip netns")], [], with_rules=False)
    with pytest.raises(Failure):
        capture.read_in(alive, ["proc/net/stat/nf_conntrack"], [])


# ---- who touches the machine (issue 21, item 1) --------------------------------------------------------

# Rooms whose files may open files, enter namespaces and run programs.
MACHINE_ROOMS = ("sources", "write", "lab")
# Not reading the machine, said where it is done: (file, function) -> why.
MACHINE_ALLOWED: dict[tuple[str, str], str] = {
    ("cli.py", "_main"): "the process's own stdout pointed at /dev/null after a broken pipe",
    ("commands/doctor.py", "_page"): "the pager: a process-level helper, as for git or man",
    ("monitor/http.py", "listen_socket"): "the exporter's own listening socket: serving, not reading",
    ("bundle/collect.py", "_anonymize"): "tells the bundle's proc/sys members by name; reads nothing",
    ("bundle/collect.py", "_cut"): "cuts the spooled listing of the bundle being written (its own output)",
    ("bundle/collect.py", "_write_tar"): "writes the bundle archive it was asked for (its own output)",
    ("diagnose/checks/ct010_memory.py", "run"): "names /proc/meminfo as the evidence's source; reads nothing",
}


def _touch(node: ast.AST) -> str | None:
    """What a node does to the machine, in the words of the rule ("open(", '"/proc', "setns", ...)."""
    if isinstance(node, ast.Call):
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        # open(), os.open(), os.fdopen(), tarfile.open(), path.open(); not a class's own constructor
        # such as HostRoot.open()
        if name in ("open", "fdopen") and not owner[:1].isupper():
            return f"{owner + '.' if owner else ''}{name}("
        if (owner, name) == ("socket", "socket"):
            return "socket.socket"
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        if node.value.startswith(("/proc", "/sys")):
            return '"/' + node.value.split("/")[1]
    elif isinstance(node, ast.Import):
        if any(a.name.split(".")[0] == "subprocess" for a in node.names):
            return "subprocess"
    elif isinstance(node, ast.ImportFrom):
        if (node.module or "").split(".")[0] == "subprocess":
            return "subprocess"
        if any(a.name == "setns" for a in node.names):
            return "setns"
    elif isinstance(node, ast.Attribute):
        if node.attr == "setns":
            return "setns"
        if isinstance(node.value, ast.Name) and node.value.id == "subprocess":
            return "subprocess"
    elif isinstance(node, ast.Name) and node.id == "setns":
        return "setns"
    return None


def _not_code(tree: ast.AST) -> set[int]:
    """ids of the nodes that are not code run: docstrings, and the types named in annotations."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body \
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant):
            out.add(id(n.body[0].value))
        notes = [n.returns] if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
        notes += [n.annotation] if isinstance(n, (ast.arg, ast.AnnAssign)) else []
        for a in notes:
            if a is not None:
                out |= {id(x) for x in ast.walk(a)}
    return out


def machine_access(path: Path) -> list[tuple[int, str, str]]:
    """(line, function, what) of each place a file opens a file, names /proc or /sys, enters a netns,
    runs a program or makes a socket; docstrings, comments and annotations are not looked at."""
    tree = ast.parse(path.read_text())
    skip = _not_code(tree)
    found: list[tuple[int, str, str]] = []

    def visit(node: ast.AST, func: str) -> None:
        if id(node) in skip:
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not func:
            func = node.name  # the outermost function names the place
        what = _touch(node)
        if what:
            found.append((getattr(node, "lineno", 0), func, what))
        for child in ast.iter_child_nodes(node):
            visit(child, func)

    visit(tree, "")
    return found


def test_only_sources_write_and_lab_touch_the_machine():
    """Every read of the machine or an image is in sources/ (changes in write/, the lab's namespaces in
    lab/): elsewhere no file is opened, no /proc or /sys path named, no netns entered, no program run."""
    bad: list[str] = []
    allowed_seen: set[tuple[str, str]] = set()
    for p in sorted(SRC.rglob("*.py")):
        rel = str(p.relative_to(SRC))
        if rel.split("/")[0] in MACHINE_ROOMS:
            continue
        for line, func, what in machine_access(p):
            if (rel, func) in MACHINE_ALLOWED:
                allowed_seen.add((rel, func))
                continue
            bad.append(f"{rel}:{line} ({func or 'module'}): {what}")
    assert not bad, "\n".join(bad)
    assert set(MACHINE_ALLOWED) <= allowed_seen, f"no longer needed: {set(MACHINE_ALLOWED) - allowed_seen}"


def test_the_machine_access_scan_sees_what_it_must(tmp_path):
    """The scan itself: code is found; docstrings, comments and annotations are not."""
    import textwrap

    src = textwrap.dedent('''
        """Reads /proc/net/nf_conntrack with open() and subprocess."""
        import subprocess  # one
        from ctdoctor.sources.netns import setns

        def f(path: socket.socket) -> subprocess.Popen:
            """open() here is prose"""
            with open(path) as fh:  # open( in a comment
                pass
            os.fdopen(3)
            x = "/proc/net/stat/nf_conntrack"
            s = socket.socket()
            return x, f"/sys/module/{path}"
    ''')
    (tmp_path / "probe.py").write_text(src)
    got = [(func, what) for _line, func, what in machine_access(tmp_path / "probe.py")]
    assert got == [("", "subprocess"), ("", "setns"), ("f", "open("), ("f", "os.fdopen("),
                   ("f", '"/proc'), ("f", "socket.socket"), ("f", '"/sys')], got
