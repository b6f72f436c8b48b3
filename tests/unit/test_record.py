"""record's triggers, cool-down and retention, incidents' listing, and cut listings: no kernel needed."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from ctdoctor.model.samples import Sample
from ctdoctor.monitor.record import Recorder, bundles, parse_size
from ctdoctor.sources.incident import read_incident
from tests.conftest import assert_one_line_error, run_cli, run_json

IMAGES = Path(__file__).parent.parent / "images"


class FakeReader:
    def __init__(self):
        self.samples: list[Sample] = []
        self.limit = 1000

    def rediscover(self):
        pass

    def rediscover_soon(self, min_gap: float = 1.0):
        pass

    def sample(self):
        return list(self.samples), self.limit, 256

    def close(self):
        pass


def recorder(tmp_path, **kw) -> Recorder:
    args = {"threshold": 0.8, "interval": 1.0, "keep": 3, "max_size": 10 << 20, "cooldown": 600.0}
    args.update(kw)
    r = Recorder(str(tmp_path), **args)
    r.reader = FakeReader()
    return r


def test_fill_crossing_triggers_once_per_cooldown(tmp_path):
    r = recorder(tmp_path)
    r.reader.samples = [Sample("pod-a", 1, count=500, stats={"drop": 0, "insert_failed": 0})]
    assert r.sample() == []
    r.reader.samples = [Sample("pod-a", 1, count=850, stats={"drop": 0, "insert_failed": 0})]
    (t,) = r.sample()
    assert (t.netns, t.kind) == ("pod-a", "fill") and t.fill == 0.85 and "850/1000" in t.detail
    assert r.sample() == []  # still full: the cool-down holds
    r.watch["pod-a"].last_capture -= 601
    assert [x.kind for x in r.sample()] == ["fill"]


def test_rising_drops_trigger_below_the_threshold(tmp_path):
    r = recorder(tmp_path)
    r.reader.samples = [Sample("init", 1, count=10, stats={"drop": 5, "insert_failed": 0}),
                        Sample("pod-b", 2, count=10, stats={"drop": 0, "insert_failed": 7})]
    assert r.sample() == []
    r.reader.samples = [Sample("init", 1, count=10, stats={"drop": 5, "insert_failed": 0}),
                        Sample("pod-b", 2, count=10, stats={"drop": 0, "insert_failed": 9})]
    (t,) = r.sample()
    assert (t.netns, t.kind) == ("pod-b", "insert_failed") and "insert_failed +2" in t.detail


def test_unreadable_and_gone_namespaces_are_left_alone(tmp_path):
    r = recorder(tmp_path)
    r.reader.samples = [Sample("pid:9", 3, readable=False), Sample("pod-c", 4, count=None)]
    assert r.sample() == [] and r.watch == {}
    r.reader.samples = [Sample("pod-d", 5, count=1, stats={})]
    r.sample()
    r.reader.samples = []
    r.sample()
    assert r.watch == {}


def test_history_is_kept_for_the_incident(tmp_path):
    r = recorder(tmp_path)
    for c in (100, 400, 900):
        r.reader.samples = [Sample("pod-a", 1, count=c, stats={"drop": 0})]
        r.sample()
    assert [h["count"] for h in r.watch["pod-a"].history] == [100, 400, 900]


def _bundle(tmp_path: Path, name: str, size: int = 1000, incident: dict | None = None) -> Path:
    p = tmp_path / name
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tf:
        data = json.dumps(incident or {"netns": "x"}).encode()
        ti = tarfile.TarInfo("ctdoctor-h-1/ctdoctor/incident.json")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        pad = os.urandom(size)
        ti = tarfile.TarInfo("ctdoctor-h-1/pad")
        ti.size = len(pad)
        tf.addfile(ti, io.BytesIO(pad))
    p.write_bytes(raw.getvalue())
    return p


def test_prune_keeps_the_newest_by_count_and_size(tmp_path):
    for i in range(5):
        _bundle(tmp_path, f"2026112{i}T000000Z-pod-a.tar.gz")
    (tmp_path / "notes.txt").write_text("not ours")
    r = recorder(tmp_path, keep=3)
    removed = r.prune()
    assert removed == ["20261120T000000Z-pod-a.tar.gz", "20261121T000000Z-pod-a.tar.gz"]
    assert [n for n, _ in bundles(str(tmp_path))] == [f"2026112{i}T000000Z-pod-a.tar.gz" for i in (2, 3, 4)]
    assert (tmp_path / "notes.txt").exists()  # only bundles are ever removed
    sizes = sorted(s for _, s in bundles(str(tmp_path)))
    r = recorder(tmp_path, keep=50, max_size=sizes[-1] + sizes[-2] + 10)
    r.prune()
    assert len(bundles(str(tmp_path))) == 2
    r = recorder(tmp_path, keep=50, max_size=1)
    r.prune()
    assert len(bundles(str(tmp_path))) == 1  # the newest incident always stays


def test_sizes():
    assert parse_size("500M") == 500 << 20 and parse_size("2G") == 2 << 30 and parse_size("1.5GiB") == 3 << 29
    with pytest.raises(ValueError):
        parse_size("lots")


def test_incidents_lists_and_survives_a_broken_bundle(tmp_path):
    _bundle(tmp_path, "20261125T030000Z-pod-a.tar.gz", incident={
        "time": "2026-11-25T03:00:00Z", "netns": "pod-a", "trigger": "fill", "peak_fill": 0.97,
        "top": {"src": [{"key": "10.1.2.3", "count": 9, "share": 0.9}]},
        "rates": {"src": [{"key": "10.1.2.3", "rate": 410.5, "count": 1231}]}})
    (tmp_path / "20261125T040000Z-pod-b.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    rc, doc = run_json("incidents", "--dir", str(tmp_path))
    assert rc == 0
    a, b = doc["incidents"]
    assert (a["netns"], a["trigger"], a["top_source"], a["top_new_source_rate"]) == ("pod-a", "fill", "10.1.2.3", 410.5)
    assert "not a readable incident bundle" in b["error"]
    rc, out, _err = run_cli("incidents", "--dir", str(tmp_path))
    assert rc == 0 and "10.1.2.3 (90%)" in out and "10.1.2.3 410/s" in out and "pod-b" in out


def test_read_incident_refuses_a_bundle_without_one(tmp_path):
    from ctdoctor.errors import InputError

    p = tmp_path / "20261125T030000Z-x.tar.gz"
    with tarfile.open(p, "w:gz") as tf:
        ti = tarfile.TarInfo("top/other")
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(InputError, match=r"no ctdoctor/incident\.json"):
        read_incident(str(p))


@pytest.mark.parametrize("argv,code,contains", [
    (["incidents", "--dir", "/nonexistent/x"], 2, "no such directory"),
    (["incidents"], 2, "--dir"),
    (["record", "--dir", "/etc/hostname"], 2, "not a directory"),
    (["record", "--dir", "/tmp/x", "--threshold", "0"], 2, "--threshold"),
    (["record", "--dir", "/tmp/x", "--threshold", "1.5"], 2, "--threshold"),
    (["record", "--dir", "/tmp/x", "--max-size", "lots"], 2, "--max-size"),
    (["record", "--dir", "/tmp/x", "--interval", "0"], 2, "--interval"),
])
def test_cli_edges_are_one_line(argv, code, contains):
    rc, _out, err = run_cli(*argv, timeout=30)
    assert_one_line_error(rc, err, code=code, contains=contains)


def test_record_refuses_a_host_image():
    rc, _out, err = run_cli("--root", str(IMAGES / "bundle-vm-6.18"), "record", "--dir", "/tmp/x", timeout=30)
    assert rc == 2 and "running kernel" in err


# ---- a listing cut to a sample -----------------------------------------------------------------------


def test_a_cut_listing_is_read_as_a_sample(tmp_path):
    """A huge listing kept as its first lines under a marker line: top and the doctor say it is a
    sample, the marker is not counted as an unreadable line, and count-vs-listed is not judged."""
    import shutil

    from ctdoctor.bundle.collect import _cut

    root = tmp_path / "img"
    shutil.copytree(IMAGES / "bundle-vm-6.18", root)
    listing = root / "proc/net/nf_conntrack"
    listing.write_bytes((Path(__file__).parent.parent / "data" / "proc_nf_conntrack_6.18").read_bytes())
    lines = listing.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 4
    limit = sum(len(x) for x in lines[:3]) + 5
    assert _cut(str(listing), limit) is True
    text = listing.read_bytes()
    assert text.startswith(b"# ctdoctor: a sample: the first 3 of %d entries\n" % len(lines))
    rc, doc = run_json("--root", str(root), "top", "--by", "src")
    assert rc == 0 and doc["total"] == 3 and doc["unreadable"] == 0 and doc["namespaces"][0]["sample"] is True
    (root / "proc/sys/net/netfilter/nf_conntrack_count").write_text("500\n")  # big enough to compare
    rc, out, _err = run_cli("--root", str(root), "--format", "json", "--only", "CT004")
    d = json.loads(out)
    assert not d["findings"] and "cut" in d["unknown"][0]["reason"]
    assert _cut(str(listing), 10 << 20) is False  # small enough: untouched


def test_record_unit_runs_record_with_real_flags():
    import configparser
    import importlib

    from ctdoctor.commands import parser as cli_parser

    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string((Path(__file__).parent.parent.parent / "contrib/systemd/ctdoctor-record.service").read_text())
    argv = cp["Service"]["ExecStart"].split()[1:]
    assert argv[0] == "record" and cp["Service"]["NoNewPrivileges"] == "yes"
    commands = {"record": cli_parser.COMMANDS["record"]}
    parser = cli_parser.build_parser(commands)
    importlib.import_module(commands["record"][0]).add_arguments(parser._subparsers._group_actions[0].choices["record"])
    got = parser.parse_args(argv)
    assert got.dir == "/var/lib/ctdoctor/incidents" and got.max_size == 2 << 30 and got.threshold == 0.8
