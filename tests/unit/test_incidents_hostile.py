"""`incidents --dir` on a folder someone else could write: crafted bundles, links, FIFOs, wrong JSON
types, member floods, markup and escapes in the text. Every case: a listing with the bad ones as
rows with a reason, exit 0, no internal error, no hang; text inert on a terminal and in a spreadsheet.
A second recorder on one folder stops in one line."""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import assert_one_line_error, run_cli, run_json


def bundle(d: Path, name: str, incident=None, raw_json: bytes | None = None, members_before: int = 0,
           pad: int = 0) -> Path:
    p = d / name
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(members_before):
            ti = tarfile.TarInfo(f"top/m{i}")
            tf.addfile(ti, io.BytesIO(b""))
        if pad:
            ti = tarfile.TarInfo("top/pad")
            ti.size = pad
            tf.addfile(ti, io.BytesIO(b"\0" * pad))
        data = raw_json if raw_json is not None else json.dumps(incident if incident is not None else {}).encode()
        ti = tarfile.TarInfo("top/ctdoctor/incident.json")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    p.write_bytes(buf.getvalue())
    return p


GOOD = {"time": "2026-11-25T03:00:00Z", "netns": "pod-a", "trigger": "fill", "peak_fill": 0.97,
        "top": {"src": [{"key": "10.1.2.3", "count": 9, "share": 0.9}]}}


def listing(d: Path, timeout: float = 60) -> tuple[dict, str, str]:
    t = time.monotonic()
    rc, doc = run_json("incidents", "--dir", str(d), timeout=timeout)
    assert rc == 0
    rc, text, err = run_cli("incidents", "--dir", str(d), timeout=timeout)
    assert rc == 0 and "internal error" not in err, err
    rc, csv_out, err = run_cli("incidents", "--dir", str(d), "--format", "csv", timeout=timeout)
    assert rc == 0 and "internal error" not in err, err
    assert time.monotonic() - t < timeout
    return doc, text, csv_out


def test_links_fifos_and_folders_named_like_bundles_are_listed_not_read(tmp_path):
    bundle(tmp_path, "20261125T030000Z-good.tar.gz", GOOD)
    os.symlink("/etc/shadow", tmp_path / "20261125T040000Z-link.tar.gz")
    os.mkfifo(tmp_path / "20261125T050000Z-fifo.tar.gz")  # opening it for reading would block forever
    (tmp_path / "20261125T060000Z-dir.tar.gz").mkdir()
    doc, _text, _csv = listing(tmp_path, timeout=30)
    by = {os.path.basename(r["bundle"]): r for r in doc["incidents"]}
    assert by["20261125T030000Z-good.tar.gz"]["netns"] == "pod-a"
    assert "a symlink: not read" in by["20261125T040000Z-link.tar.gz"]["error"]
    assert "a FIFO: not read" in by["20261125T050000Z-fifo.tar.gz"]["error"]
    assert "a folder: not read" in by["20261125T060000Z-dir.tar.gz"]["error"]


def test_member_floods_and_padding_are_cut_short(tmp_path):
    bundle(tmp_path, "20261125T030000Z-flood.tar.gz", GOOD, members_before=5000)
    bundle(tmp_path, "20261125T040000Z-pad.tar.gz", GOOD, pad=80 << 20)  # 80 MiB of zeros before it
    bundle(tmp_path, "20261125T050000Z-good.tar.gz", GOOD)
    t = time.monotonic()
    doc, _, _ = listing(tmp_path, timeout=60)
    assert time.monotonic() - t < 30
    rows = doc["incidents"]
    assert "in its first 64 members" in rows[0]["error"]
    assert "no ctdoctor/incident.json in its first" in rows[1]["error"]
    assert rows[2]["netns"] == "pod-a"


@pytest.mark.parametrize("incident,raw", [
    (None, b"[1, 2, 3]"), (None, b'"text"'), (None, b"{" * 100000), (None, b"\xff\xfe"), (None, b"1e999"),
    ({"time": 5, "netns": ["x"], "trigger": {"a": 1}, "peak_fill": "high", "top": "none", "rates": [1]}, None),
    ({"peak_fill": float("nan"), "top": {"src": [5]}, "rates": {"src": [{"key": 1, "rate": "fast"}]}}, None),
    ({"peak_fill": 1e308, "pod": {"name": 7}}, None),
])
def test_wrong_json_types_become_blanks_or_a_reason(tmp_path, incident, raw):
    bundle(tmp_path, "20261125T030000Z-x.tar.gz", incident, raw_json=raw)
    doc, _, _ = listing(tmp_path)
    (row,) = doc["incidents"]
    assert "error" in row or all(row.get(k) is None or isinstance(row[k], (str, int, float))
                                 for k in ("time", "netns", "trigger", "peak_fill", "top_source"))


def test_text_from_a_bundle_is_inert_on_a_terminal_and_in_a_spreadsheet(tmp_path):
    evil = {"time": "=HYPERLINK(\"http://x\")", "netns": "[link=file:///etc/passwd]click[/link]\x1b]8;;x\x07",
            "trigger": "@SUM(1)", "peak_fill": 0.5,
            "top": {"src": [{"key": "-2+3\u202eevil", "count": 1, "share": 0.5}]}}
    bundle(tmp_path, "20261125T030000Z-[bold]x[red].tar.gz", evil)
    doc, text, csv_out = listing(tmp_path)
    assert "\x1b" not in text and "\u202e" not in text
    assert "[link=file:///etc/passwd]click[/link]" in text  # shown as written, not as a link
    assert "[bold]x[red]" in text
    for row in list(csv.reader(io.StringIO(csv_out)))[1:]:
        for cell in row:
            assert not cell or cell[0] not in "=+-@\t\r", row
            assert "\x1b" not in cell
    assert doc["incidents"][0]["trigger"] == "@SUM(1)"  # JSON keeps the value; only its control chars go


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                     ["time", "netns", "trigger", "peak_fill", "top", "rates", "src", "key", "share", "rate", "pod",
                      "name", "namespace", "detail"]), c, max_size=6), max_leaves=25)),
    min_size=1, max_size=4))
def test_fuzz_crafted_incident_folders(tmp_path_factory, items):
    """Random bytes as bundles, random JSON shapes as incident.json: 0 internal errors, 0 hangs."""
    d = tmp_path_factory.mktemp("inc")
    for i, item in enumerate(items):
        name = f"20261125T0{i}0000Z-f{i}.tar.gz"
        if isinstance(item, bytes):
            (d / name).write_bytes(item)
        else:
            try:
                raw = json.dumps(item).encode()
            except ValueError:
                raw = b"{}"
            bundle(d, name, raw_json=raw)
    from ctdoctor.commands.incidents import collect_rows

    rows = collect_rows(str(d))  # in-process: an exception here fails the test
    assert len(rows) == len(items)
    json.dumps(rows)


def test_a_second_recorder_on_one_folder_stops_in_one_line(tmp_path):
    import subprocess
    import sys

    if os.geteuid() != 0:
        pytest.skip("record needs root")
    d = tmp_path / "inc"
    first = subprocess.Popen([sys.executable, "-m", "ctdoctor", "record", "--dir", str(d), "--netns", "init"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (d / ".ctdoctor-record.lock").exists() or not (d / ".ctdoctor-record.lock").read_text():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        rc, _out, err = run_cli("record", "--dir", str(d), "--netns", "init", timeout=30)
        assert_one_line_error(rc, err, code=1, contains=f"another ctdoctor record (pid {first.pid}) writes there")
    finally:
        first.terminate()
        first.wait(15)
