"""record keeps its last samples of every netns in DIR/history.json (atomically, at most once a second);
status --watch starts its trend from it while that recorder runs, and ignores it silently when no recorder
holds the folder or the file is old, broken or hostile. No kernel needed (the live test is in
tests/integration/test_watch.py)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import time

import pytest

from ctdoctor.model.samples import Sample
from ctdoctor.monitor import record
from ctdoctor.render.status_text import WatchState
from ctdoctor.sources import incident
from ctdoctor.sources.incident import (
    HISTORY_NAME,
    LOCK_NAME,
    MAX_HISTORY_BYTES,
    parse_history,
    recorder_history,
    recorder_running,
)
from tests.unit.test_record import recorder


def _sample(r: record.Recorder, counts: dict[str, int]) -> None:
    r.reader.samples = [Sample(n, i + 1, count=c, stats={"drop": 0}) for i, (n, c) in enumerate(counts.items())]
    r.sample()


def _doc(tmp_path) -> dict:
    return json.loads((tmp_path / HISTORY_NAME).read_text())


def test_the_recorder_writes_its_history_atomically_and_at_most_once_a_second(tmp_path, monkeypatch):
    r = recorder(tmp_path)
    clock = [1_800_000_000.0]
    monkeypatch.setattr(record.time, "time", lambda: clock[0])
    _sample(r, {"init": 100, "pod-a": 5})
    doc = _doc(tmp_path)
    assert doc["format"] == "ctdoctor-record-history" and doc["written"] == clock[0]
    assert doc["netns"] == {"init": [[clock[0], 100, 1000]], "pod-a": [[clock[0], 5, 1000]]}
    assert stat.S_IMODE((tmp_path / HISTORY_NAME).stat().st_mode) == 0o600
    clock[0] += 0.4
    _sample(r, {"init": 200, "pod-a": 6})
    assert len(_doc(tmp_path)["netns"]["init"]) == 1  # within the second: not written again
    clock[0] += 0.7
    _sample(r, {"init": 300})  # pod-a went away: gone from the history too
    doc = _doc(tmp_path)
    assert [c for _t, c, _m in doc["netns"]["init"]] == [100, 200, 300] and "pod-a" not in doc["netns"]
    assert [p.name for p in tmp_path.iterdir()] == [HISTORY_NAME]  # no temp file left
    for _ in range(40):
        clock[0] += 1
        _sample(r, {"init": 1})
    doc = _doc(tmp_path)
    assert len(doc["netns"]["init"]) == record.HISTORY  # small: the last 30 samples
    assert len(json.dumps(doc)) < 4096


def test_a_history_that_cannot_be_written_is_said_once(tmp_path, monkeypatch, capsys):
    r = recorder(tmp_path)
    (tmp_path / HISTORY_NAME).mkdir()  # os.replace of a file over a folder fails
    clock = [1_800_000_000.0]
    monkeypatch.setattr(record.time, "time", lambda: clock[0])
    for _ in range(3):
        clock[0] += 2
        _sample(r, {"init": 1})
    assert capsys.readouterr().out.count("history for status --watch is not kept") == 1


def _locked(d) -> int:
    fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _write(d, netns: dict, written: float | None = None, **extra) -> None:
    doc = {"format": "ctdoctor-record-history", "version": 1, "written": time.time() if written is None else written,
           "interval": 1.0, "netns": netns, **extra}
    (d / HISTORY_NAME).write_text(json.dumps(doc))


def test_read_back_only_while_a_recorder_holds_the_folder(tmp_path):
    now = time.time()
    _write(tmp_path, {"init": [[now - 2, 10, 100], [now - 1, 20, 100]]})
    assert not recorder_running(str(tmp_path)) and recorder_history(str(tmp_path)) == {}
    (tmp_path / LOCK_NAME).write_text("12345\n")  # a lock file nobody holds: a recorder that ended
    assert recorder_history(str(tmp_path)) == {}
    fd = _locked(tmp_path)
    try:
        assert recorder_running(str(tmp_path))
        assert recorder_history(str(tmp_path)) == {"init": [(now - 2, 10), (now - 1, 20)]}
    finally:
        os.close(fd)
    assert recorder_history(str(tmp_path)) == {}


def test_the_real_recorder_lock_is_seen_and_never_taken(tmp_path):
    fd = record.outfiles.lock_dir(str(tmp_path), LOCK_NAME, "ctdoctor record")
    try:
        assert recorder_running(str(tmp_path))
        assert recorder_running(str(tmp_path))  # reading did not take it: still the recorder's
    finally:
        os.close(fd)
    assert not recorder_running(str(tmp_path))


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[1, 2]", b'{"format": "something-else", "written": 0, "netns": {}}',
    b'{"format": "ctdoctor-record-history", "netns": {"init": [[1, 2, 3]]}}',  # no time written
    b'{"format": "ctdoctor-record-history", "written": "soon", "netns": {}}',
    b'{"format": "ctdoctor-record-history", "written": 1e308, "netns": {}}',
    b'{"format": "ctdoctor-record-history", "written": NaN, "netns": {}}',
    b"[" * 100000 + b"]" * 100000,
])
def test_junk_is_ignored(tmp_path, body):
    (tmp_path / HISTORY_NAME).write_bytes(body)
    fd = _locked(tmp_path)
    try:
        assert recorder_history(str(tmp_path)) == {}
    finally:
        os.close(fd)


def test_an_old_history_is_ignored_and_bad_samples_are_left_out():
    now = 1_800_000_000.0
    old = {"format": "ctdoctor-record-history", "written": now - 3600, "netns": {"init": [[now - 3600, 1, 2]]}}
    assert parse_history(json.dumps(old).encode(), now) == {}
    doc = {"format": "ctdoctor-record-history", "written": now, "netns": {
        "init": [[now - 5, 10, 100], "x", [now - 4], [now - 3, -1, 1], [now - 3, 1.5, 1], [now - 3, True, 1],
                 [now - 9999, 3, 1], [now + 60, 3, 1], [now - 6, 7, 1], [now - 2, 30, None]],
        "": [[now, 1, 1]], "pod-x": "junk", "pod-y": []}}
    assert parse_history(json.dumps(doc).encode(), now) == {"init": [(now - 5, 10), (now - 2, 30)]}


def test_hostile_files_are_not_read(tmp_path):
    now = time.time()
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"format": "ctdoctor-record-history", "written": now,
                                  "netns": {"init": [[now, 1, 1]]}}))
    fd = _locked(tmp_path)
    try:
        (tmp_path / HISTORY_NAME).symlink_to(target)  # a symlink: never followed
        assert recorder_history(str(tmp_path)) == {}
        (tmp_path / HISTORY_NAME).unlink()
        os.mkfifo(tmp_path / HISTORY_NAME)  # a FIFO: never blocked on
        assert recorder_history(str(tmp_path)) == {}
        (tmp_path / HISTORY_NAME).unlink()
        _write(tmp_path, {"init": [[now, 1, 1]]}, pad="x" * MAX_HISTORY_BYTES)  # huge
        assert recorder_history(str(tmp_path)) == {}
        _write(tmp_path, {f"ns{i}": [[now - 1, i, 9]] * 100 for i in range(3)})  # many samples: the last few
        got = recorder_history(str(tmp_path))
        assert got["ns2"] == [(now - 1, 2)]
    finally:
        os.close(fd)
    os.unlink(tmp_path / LOCK_NAME)
    (tmp_path / LOCK_NAME).symlink_to(target)  # a lock that is a symlink is no recorder's
    assert not recorder_running(str(tmp_path))


def test_a_missing_folder_is_no_recorder():
    assert recorder_history("/nonexistent/ctdoctor-incidents") == {}
    assert incident.recorder_running("/nonexistent") is False


def test_the_watch_trend_starts_from_the_history():
    st = WatchState(interval=2.0)
    st.seed({"init": [(990.0, 10), (995.0, 20)], "pod-a": [(1001.0, 5)]}, wall=1000.0, mono=50.0)
    assert st.trend("init") == [10, 20] and st.seen["init"][0] == (40.0, 10)
    assert "pod-a" not in st.seen  # from the future: left out
    st.observe({"namespaces": [{"name": "init", "count": 30}]}, now=55.0)
    assert st.trend("init") == [10, 20, 30]
    assert st.count_rate("init") == pytest.approx(1.0)  # (30 - 20) over the 10 s since the recorder's last
    st2 = WatchState(interval=1.0, keep=3)
    st2.seed({"init": [(float(t), t) for t in range(10)]}, wall=10.0, mono=100.0)
    assert st2.trend("init") == [7, 8, 9]


def test_the_top_watch_trend_starts_from_the_history_of_the_one_netns_it_shows():
    from ctdoctor.render.top_text import TopWatch

    now = time.time()
    hist = {"pod-a": [(now - 3, 10), (now - 2, 40), (now + 100, 1)], "init": [(now - 1, 5)]}
    one = {"namespaces": [{"netns": "pod-a"}], "matched": 70, "total": 70}
    w = TopWatch(2.0, keys=False, history=hist)
    head = " ".join(w.header(one, 80))
    assert w.totals == [10, 40, 70] and re.search(r"matched [▁▂▃▄▅▆▇█]{3}", head), head
    w.header(one, 80)
    assert w.totals == [10, 40, 70, 70]  # taken once, at the first frame
    filtered = {**one, "matched": 7}  # a filter: the matched total is not the count the recorder saw
    w = TopWatch(2.0, keys=False, history=hist)
    w.header(filtered, 80)
    assert w.totals == [7]
    both = {"namespaces": [{"netns": "pod-a"}, {"netns": "init"}], "matched": 75, "total": 75}
    w = TopWatch(2.0, keys=False, history=hist)
    w.header(both, 80)
    assert w.totals == [75]
