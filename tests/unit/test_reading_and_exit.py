"""How `top` reads a live listing (C read_full, a reader started before the setup) and how the
console script exits (no teardown, but atexit handlers and flushed output)."""

from __future__ import annotations

import json
import os
import tarfile
import threading

import pytest

from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.query import parse_query
from ctdoctor.listing.rows import rows
from ctdoctor.sources.listing_files import StartedListing, filler, tally_stream
from tests.conftest import DATA, IMAGES, run_cli

needs_accel = pytest.mark.skipif(not accelerated(), reason="C accelerator not built")
LISTING = DATA / "proc_nf_conntrack_6.18"


@needs_accel
def test_read_full_fills_the_buffer_across_short_reads_then_says_0():
    """A pipe gives what was written so far, like /proc gives a page: read_full keeps reading."""
    from ctdoctor.listing._fastscan import read_full

    r, w = os.pipe()
    parts = [b"a" * 3000, b"b" * 5000, b"c" * 100]

    def writer():
        for p in parts:
            os.write(w, p)
        os.close(w)

    t = threading.Thread(target=writer)
    t.start()
    buf = bytearray(6000)
    assert read_full(r, buf) == 6000 and bytes(buf) == (b"a" * 3000 + b"b" * 3000)
    assert read_full(r, buf) == 2100 and bytes(buf[:2100]) == b"b" * 2000 + b"c" * 100
    assert read_full(r, buf) == 0
    t.join()
    os.close(r)
    with pytest.raises(OSError):
        read_full(r, buf)  # closed: EBADF, not a silent 0


@needs_accel
def test_a_started_listing_counts_what_a_plain_stream_counts():
    q = parse_query("src,state", None, None, None, None, None)
    with open(LISTING, "rb") as f:
        plain = tally_stream(f, q)
    started = StartedListing(open(LISTING, "rb", buffering=0))  # noqa: SIM115 - it closes the file
    with started:
        early = tally_stream(started, q)
    assert early.total == plain.total > 0
    assert rows(early, q, None) == rows(plain, q, None)
    assert not started.reader.thread.is_alive() and started.stream.closed


@needs_accel
def test_an_unused_started_listing_stops_its_reader_and_closes_the_file(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(LISTING.read_bytes() * 4000)  # more than its buffers hold: the reader waits for one
    started = StartedListing(open(big, "rb", buffering=0))  # noqa: SIM115 - it closes the file
    started.close()
    assert not started.reader.thread.is_alive() and started.stream.closed


def test_top_on_a_tarball_prints_everything_and_removes_its_unpacked_copy(tmp_path):
    """The console script skips the interpreter's teardown after top, yet its atexit handlers run
    (the unpacked image is removed) and all of its output is written, also into a pipe."""
    arc = tmp_path / "sosreport-node7-2026-11-21-abcdef.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(IMAGES / "sosreport-node7-k8s", arcname="sosreport-node7-2026-11-21-abcdef")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    rc, out, err = run_cli("--root", str(arc), "top", "--by", "src", "--limit", "0", "--format", "json",
                           env={"TMPDIR": str(tmp)})
    assert rc == 0, err
    doc = json.loads(out)  # complete: it parses
    assert doc["total"] > 0 and sum(r["count"] for r in doc["rows"]) == doc["matched"]
    assert os.listdir(tmp) == []
    rc, out, err = run_cli("--root", str(arc), "top", "--by", "dport", "--limit", "0", "--format", "csv",
                           env={"TMPDIR": str(tmp)})
    assert rc == 0 and out.endswith("\n") and len(out.splitlines()) > 1, err
    assert os.listdir(tmp) == []


@pytest.mark.parametrize("python", [False, True])
def test_an_unbuffered_stream_fills_whole_buffers(python):
    """A raw file that gives a little per read (a pipe here, a page of /proc live) still reaches the
    scanner in full buffers, by either scanner's filler."""
    if not python and not accelerated():
        pytest.skip("C accelerator not built")
    r, w = os.pipe()
    data = LISTING.read_bytes()

    def writer():
        for i in range(0, len(data), 700):
            os.write(w, data[i:i + 700])
        os.close(w)

    t = threading.Thread(target=writer)
    t.start()
    with open(r, "rb", buffering=0) as f:
        fill = filler(f, python)
        buf = bytearray(4096)
        sizes = []
        while n := fill(buf):
            sizes.append(n)
    t.join()
    assert sum(sizes) == len(data) and all(n == 4096 for n in sizes[:-1])


def test_version_says_which_scanner_top_uses():
    rc, out, _ = run_cli("--version")
    assert rc == 0 and out.startswith("ctdoctor ")
    assert ("(C scanner)" in out) is accelerated()
    rc, out, _ = run_cli("--version", env={"CTDOCTOR_NO_ACCEL": "1"})
    assert rc == 0 and "(pure-Python scanner: CTDOCTOR_NO_ACCEL is set)" in out


def test_named_ref_finds_init_and_ip_netns_names_without_discovery(tmp_path):
    from ctdoctor.sources import netns as nsmod

    (tmp_path / "blue").write_text("")
    ref = nsmod.named_ref("blue", run_netns=str(tmp_path))
    assert ref is not None and ref.name == "blue" and ref.inode == os.stat(tmp_path / "blue").st_ino
    assert ref.path == str(tmp_path / "blue") and not ref.is_init
    init = nsmod.named_ref(None, run_netns=str(tmp_path))
    assert init is not None and init.is_init and init.name == "init" and init == nsmod.named_ref("init")
    for other in ("all", "pid:1", "../blue", ".", "4026531840", "red"):
        assert nsmod.named_ref(other, run_netns=str(tmp_path)) is None, other
