"""Progress of collect (steps, bytes and entries) and flush (entries deleted of all) on the real kernel:
on a terminal for text output, never when piped, never for JSON (see tests/unit/test_progress_commands.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import needs_kernel
from tests.unit.test_progress_commands import in_pty, piped

pytestmark = [needs_kernel, pytest.mark.kernel]


def test_collect_shows_its_steps_with_bytes_and_entries_on_a_terminal(netns, tmp_path):
    netns.load_established(2000)
    out = tmp_path / "b.tar.gz"
    rc, screen = in_pty(["collect", "-o", str(out)], "ctdoctor.sources.capture:spool_listing", timeout=180)
    assert rc == 0, screen[-2000:]
    assert "collecting (" in screen and "the entries of netns" in screen, screen[-2000:]
    assert " entries" in screen and "iB" in screen  # what was read so far, in bytes and entries
    assert f"wrote {out}" in screen and out.is_file()


def test_collect_says_only_what_it_wrote_when_piped(tmp_path):
    out = tmp_path / "b.tar.gz"
    rc, stdout, err = piped(["collect", "-o", str(out), "--no-entries"], timeout=180)
    assert rc == 0, err
    assert stdout == "" and "collecting" not in err and f"wrote {out}" in err


def test_flush_shows_the_entries_deleted_on_a_terminal(netns):
    netns.load_established(3000)
    rc, screen = in_pty(["--netns", netns.name, "flush", "--state", "ESTABLISHED", "--include-established"],
                        "ctdoctor.sources.ctnetlink:dump_buffers")
    assert rc == 0, screen
    assert "reading the entries of netns" in screen or "deleting entries:" in screen, screen
    assert "deleted 3,000" in screen or "deleted 3000" in screen, screen
    assert netns.count() == 0


def test_flush_json_and_piped_say_nothing_on_stderr(netns):
    netns.load_established(500)
    rc, screen = in_pty(["--netns", netns.name, "flush", "--state", "ESTABLISHED", "--include-established",
                         "--dry-run", "--format", "json"], "ctdoctor.sources.ctnetlink:dump_buffers")
    assert rc == 0 and "reading the entries" not in screen, screen
    rc, out, err = piped(["--netns", netns.name, "flush", "--state", "ESTABLISHED", "--include-established",
                          "--format", "json"], "ctdoctor.sources.ctnetlink:dump_buffers")
    assert rc == 0 and err == "", err
    assert json.loads(out)["deleted"] == 500
