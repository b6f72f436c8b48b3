"""Every command's text output fits the terminal: rendered in-process on every test image (and the lab
list, and an incidents folder) at 80 and 200 columns. No line is wider than the width (a single
unbreakable shell word of a command is the one exception), no cell is cut to one character and …, no
command is wrapped by the terminal (a long one is broken between words with \\ continuations), and no
Python repr reaches the screen."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from rich.cells import cell_len

from ctdoctor.model.fixes import words
from tests.conftest import IMAGES
from tests.unit.test_real_hosts import PYTHON_ON_SCREEN

IMAGE_DIRS = sorted(p for p in IMAGES.iterdir() if p.is_dir())
WIDTHS = (80, 200)

# one run per image: the read commands, and the fixers' dry runs where they run on an image
ON_IMAGES = [
    ["doctor"], ["doctor", "--verbose"], ["--netns", "all", "status"], ["plan"], ["top"],
    ["--netns", "all", "top", "--by", "src,dst,dport,state"], ["apply", "--max", "524288"],
    ["notrack", "--port", "53", "--proto", "udp"], ["recover", "--dry-run"], ["flush", "--state", "TIME_WAIT"],
]
# Lines shown as written, never laid out: a file's content in apply's diff (every other line of every
# command fits, or is one unbreakable word of a command).
NOT_LAID_OUT = {
    "apply": re.compile(r"^[+-]"),
}
ONE_CHAR_CUT = re.compile(r"(^|\s)[^\s…]…(\s|$)")


def run(argv: list[str], width: int, monkeypatch) -> tuple[int, str, str]:
    """The CLI in-process at a terminal ``width`` (rich reads COLUMNS when a console is made)."""
    from ctdoctor import cli

    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setenv("NO_COLOR", "1")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def assert_fits(text: str, width: int, what, allowed: re.Pattern | None = None) -> None:
    lines = text.splitlines()
    in_cmd, cmd_indent = False, 0
    for i, ln in enumerate(lines):
        s = ln.rstrip()
        stripped = s.lstrip()
        starts = stripped.startswith("$ ") or re.match(r"^\(on the host\) \$ ", stripped) is not None
        if cell_len(s) > width:
            body = re.sub(r"^(\(on the host\) )?\$ ", "", stripped).removesuffix(" \\")
            one_word = (in_cmd or starts) and len(words(body)) <= 1  # quoted spans are one word
            assert one_word or (allowed is not None and allowed.search(stripped)), \
                (what, width, f"line {i + 1} is {cell_len(s)} wide", s)
        assert not ONE_CHAR_CUT.search(s), (what, width, "a cell cut to one character", s)
        if starts:
            in_cmd, cmd_indent = s.endswith("\\"), _indent(s)
        elif in_cmd:
            assert _indent(s) > cmd_indent, (what, width, "a command's continuation is not indented", s)
            in_cmd = s.endswith("\\")
        elif i and lines[i - 1].lstrip().startswith("$ ") and stripped:
            # the line after a whole command is not the rest of it, wrapped by the terminal
            assert _indent(s) <= _indent(lines[i - 1]), (what, width, "a wrapped command", lines[i - 1], s)
    bad = [ln for ln in lines if PYTHON_ON_SCREEN.search(re.sub(r"\[?\s*\d+\.\d{6}\]", "", ln))]
    assert not bad, (what, width, "Python on screen", bad[:3])


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("image", IMAGE_DIRS, ids=lambda p: p.name)
def test_every_command_fits_on_every_image(image: Path, width: int, monkeypatch):
    for argv in ON_IMAGES:
        rc, out, err = run(["--root", str(image), *argv], width, monkeypatch)
        if rc == 2 and not out:  # refused cleanly: one line (no listing in that image, or a live-only command)
            assert err.count("\n") == 1 and err.startswith("ctdoctor: error:"), (image.name, argv, err)
            continue
        assert out.strip(), (image.name, argv, rc, err)
        cmd = next(a for a in argv if not a.startswith("-") and a != "all")
        assert_fits(out, width, (image.name, argv), NOT_LAID_OUT.get(cmd))


@pytest.mark.parametrize("width", WIDTHS)
def test_checks_and_every_explain_page_fit(width, monkeypatch):
    from ctdoctor.diagnose.checks import MODULES

    rc, out, _err = run(["checks"], width, monkeypatch)
    assert rc == 0 and "CT001" in out
    assert_fits(out, width, "checks")
    for code in MODULES:
        rc, out, _err = run(["explain", code], width, monkeypatch)
        assert rc == 0, code
        assert_fits(out, width, code)


@pytest.mark.parametrize("width", WIDTHS)
def test_lab_list_fits(width, monkeypatch):
    rc, out, err = run(["lab", "list"], width, monkeypatch)
    assert rc == 0, err
    assert "table-full" in out and "default --scale" in out
    assert_fits(out, width, "lab list")
    for ln in out.splitlines():  # a scenario's name is never split
        assert not re.search(r"\b(table-|early-|time-wait-)$", ln.rstrip()), ln


def _incidents(d: Path) -> None:
    from tests.unit.test_incidents_hostile import bundle

    long_ns = "cni-4f1e2b3c-9a2c-11ef-8e1d-0242ac120002"
    bundle(d, f"20261125T030000Z-{long_ns}.tar.gz", {
        "time": "2026-11-25T03:00:00Z", "netns": long_ns, "trigger": "fill", "peak_fill": 0.97,
        "pod": {"namespace": "kube-system", "name": "coredns-5d78c9869d-xk2lp"},
        "top": {"src": [{"key": "10.244.1.5", "count": 9, "share": 0.9}]},
        "rates": {"src": [{"key": "10.244.1.5", "rate": 410.5, "count": 1231}]}})
    bundle(d, "20261125T041500Z-init.tar.gz", {
        "time": "2026-11-25T04:15:00Z", "netns": "init", "trigger": "drop", "peak_fill": 0.999,
        "top": {"src": [{"key": "2001:db8:85a3::8a2e:370:7334", "count": 9, "share": 0.41}]}})
    (d / "20261125T050000Z-pod-b.tar.gz").write_bytes(b"\x1f\x8b not really gzip")


@pytest.mark.parametrize("width", WIDTHS)
def test_incidents_fit_one_line_per_incident(width, tmp_path, monkeypatch):
    _incidents(tmp_path)
    rc, out, err = run(["incidents", "--dir", str(tmp_path)], width, monkeypatch)
    assert rc == 0, err
    assert_fits(out, width, "incidents")
    rows = [ln for ln in out.splitlines() if re.match(r"^11-25 \d\d:\d\d:\d\d ", ln)]
    assert len(rows) == 2, out  # one line each: nothing wrapped inside a cell
    assert "init" in rows[1] and "99.9%" in rows[1]
    if width >= 200:
        assert "kube-system/coredns-5d78c9869d-xk2lp" in rows[0]  # whole when there is room
        assert "20261125T041500Z-init.tar.gz" in rows[1]


def test_status_at_80_columns_keeps_every_number_whole(monkeypatch):
    k8s = IMAGES / "sosreport-node7-k8s"
    rc, out, _err = run(["--root", str(k8s), "--netns", "all", "status"], 80, monkeypatch)
    assert rc == 0
    row = next(ln for ln in out.splitlines() if ln.startswith("cni-4f1e"))
    assert row.split()[:4] == ["cni-4f1e", "131,072", "131,072", "100%"] and "4,191" in row
    head = next(ln for ln in out.splitlines() if ln.startswith("netns"))
    assert head.split()[:4] == ["netns", "count", "max", "fill"] and "ins.fail" in head


def test_status_uses_the_width_it_has(monkeypatch):
    k8s = IMAGES / "sosreport-node7-k8s"
    _rc, narrow, _ = run(["--root", str(k8s), "--netns", "all", "status"], 80, monkeypatch)
    _rc, wide, _ = run(["--root", str(k8s), "--netns", "all", "status"], 200, monkeypatch)
    assert "█" not in narrow.split("hash")[0] and "█" in wide  # the fill bar only where it fits
    assert "memory" in narrow and "memory" in wide
