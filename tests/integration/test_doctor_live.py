"""The doctor on the real kernel: lab incidents come out as findings, a healthy netns gives none."""

import json
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import assert_exit_matches, needs_kernel, run_cli

pytestmark = [needs_kernel, pytest.mark.kernel]
SCHEMA = json.loads((Path(__file__).parents[2] / "src/ctdoctor/schemas/doctor.schema.json").read_text())


def doctor(*args):
    rc, out, _err = run_cli("doctor", "--format", "json", *args, timeout=180)
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    return rc, doc


def by(doc, code, netns=None):
    return [f for f in doc["findings"] if f["id"] == code and (netns is None or f["netns"] == netns)]


def test_a_healthy_netns_has_no_warning_or_critical_while_another_is_full(lab, netns):
    """A busy host is the normal case: another netns's full table (and its kernel log lines) is that
    netns's problem, never a warning about this one."""
    full = lab("table-full")
    netns.load_established(300)
    rc, doc = doctor("--netns", netns.name, "--interval", "0.5")
    bad = [f for f in doc["findings"] if f["severity"] in ("critical", "warning")]
    assert rc == 0 and not bad, bad
    assert [n["name"] for n in doc["namespaces"]] == [netns.name]
    rc, out, _err = run_cli("--netns", netns.name, "--format", "nagios")
    assert rc == 0 and out.startswith("CONNTRACK OK"), out
    # the same doctor over both names the full one, and only it
    rc, doc = doctor("--netns", f"{netns.name},{full.netns.name}", "--interval", "0")
    assert rc == 2 and by(doc, "CT001", full.netns.name)
    assert not [f for f in doc["findings"] if f["netns"] == netns.name and f["severity"] in ("critical", "warning")]


def test_table_full_gives_ct001_ct002_ct014_ct018_for_that_netns_by_name(lab):
    run = lab("table-full")
    name = run.netns.name
    rc, doc = doctor("--netns", name, "--interval", "1")
    assert rc == 2
    (f1,) = by(doc, "CT001", name)
    assert f1["severity"] == "critical" and f1["evidence"]["fill"] == 1.0
    (f2,) = by(doc, "CT002", name)
    assert f2["severity"] == "critical"
    assert f2["evidence"]["kernel_log_lines"] >= 1 and f2["evidence"]["netns_inferred"] is False
    assert all(f"in netns {run.netns.inode}" in x["line"] for x in f2["evidence"]["kernel_log"])
    (f18,) = by(doc, "CT018", name)
    assert f18["severity"] == "critical"
    (f14,) = by(doc, "CT014", name)
    assert f14["evidence"]["established_sockets"]["value"] == 2
    assert not by(doc, "CT001", "init"), "the host's own table is not full"


def test_early_drop_gives_ct003(lab):
    run = lab("early-drop", 200)
    rc, doc = doctor("--netns", run.netns.name, "--interval", "0")
    assert_exit_matches(rc, doc)
    found = by(doc, "CT003", run.netns.name)
    assert len(found) == 1, f"no CT003; the lab saw {run.observed}; notes {doc['notes']}"
    (f,) = found
    assert f["evidence"]["early_drop"]["value"] >= 180
    assert not by(doc, "CT002", run.netns.name), "early drop is not a drop"


def test_syn_unreplied_gives_ct012(lab):
    run = lab("syn-unreplied", 300)
    rc, doc = doctor("--netns", run.netns.name, "--interval", "0")
    found = by(doc, "CT012", run.netns.name)
    # SYN_SENT entries are unreplied too, but reported once, as SYN_SENT; in a near-empty table
    # the pile-up is information (a warning only under pressure)
    assert [f["evidence"]["state"] for f in found] == ["SYN_SENT"] and found[0]["severity"] == "info"
    assert rc == 0


def test_time_wait_pileup_gives_ct012_and_ct013(lab):
    run = lab("time-wait-pileup", 1500)
    rc, doc = doctor("--netns", run.netns.name, "--interval", "0")
    assert_exit_matches(rc, doc)
    assert "TIME_WAIT" in {f["evidence"]["state"] for f in by(doc, "CT012", run.netns.name)}
    heavy = {f["evidence"]["key"]: f for f in by(doc, "CT013", run.netns.name)}
    assert heavy["src"]["evidence"]["value"] == "127.0.0.1" and heavy["dport"]["evidence"]["value"] == "8080"


def test_notrack_without_accept_gives_ct016_and_ct014(netns):
    netns.run("nft", "add table inet raw; add chain inet raw out { type filter hook output priority raw; };"
                     "add rule inet raw out tcp dport 7070 notrack; add rule inet raw out tcp sport 7070 notrack;"
                     "add table inet filter; add chain inet filter in { type filter hook input priority 0; };"
                     "add rule inet filter in ct state established,related accept")
    rc, doc = doctor("--netns", netns.name, "--interval", "0")
    (f,) = by(doc, "CT016", netns.name)
    assert f["severity"] == "warning"
    netns.run("nft", "add rule inet filter in ct state untracked accept")
    import subprocess
    import sys

    holder = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-m", "ctdoctor.lab.traffic",
                               "connect-many", "7070", "25", "30", "7070"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(holder.stdout.readline())["ok"] == 25
        rc, doc = doctor("--netns", netns.name, "--interval", "0")
        assert_exit_matches(rc, doc)
        assert not by(doc, "CT016", netns.name)
        (f14,) = by(doc, "CT014", netns.name)
        assert f14["title"] == "connections that conntrack does not track"
        assert f14["evidence"]["established_sockets"]["value"] == 50
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_exit_codes_follow_nagios(lab):
    run = lab("syn-unreplied", 150)
    rc, out, _err = run_cli("doctor", "--netns", run.netns.name, "--interval", "0", "--only", "CT012",
                            "--format", "nagios")
    assert rc == 0 and out.startswith("CONNTRACK OK")  # information never pages
    rc, out, _err = run_cli("doctor", "--netns", run.netns.name, "--interval", "0", "--only", "CT012",
                            "--format", "nagios", env={"CTDOCTOR_FILL_WARNING": "0.0001"})
    assert rc == 1 and out.startswith("CONNTRACK WARNING - CT012")  # the same pile-up under pressure
    rc, _out, _err = run_cli("doctor", "--netns", run.netns.name, "--interval", "0", "--only", "CT017")
    assert rc == 0


def _load(netns, lines: str, tmp_path) -> None:
    path = tmp_path / "entries.save"
    path.write_text(lines)
    netns.run("conntrack", "-R", str(path))


def test_ct004_does_not_blame_the_garbage_collectors_lag(netns, tmp_path):
    # 2,000 UDP entries that expire in 2 s: counted until the gc or a read reaches them
    from ctdoctor.lab.scenarios import _udp_unreplied_lines

    _load(netns, _udp_unreplied_lines(2000, timeout=2), tmp_path)
    deadline = __import__("time").monotonic() + 10
    while __import__("time").monotonic() < deadline and netns.run("cat", "/proc/sys/net/netfilter/nf_conntrack_count"
                                                                  ).stdout.strip() != b"2000":
        __import__("time").sleep(0.1)
    __import__("time").sleep(2.5)  # now expired; the gc pass (~10 s at a 2 s timeout) has not come yet
    _rc, doc = doctor("--netns", netns.name, "--interval", "0")
    assert not by(doc, "CT004", netns.name), by(doc, "CT004", netns.name)


def test_ct004_names_the_stuck_event_listener(netns, tmp_path):
    import json as _json
    import subprocess
    import sys

    from ctdoctor.lab.scenarios import _tcp_lines

    listener = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-m", "ctdoctor.lab.traffic",
                                 "listen-events", "120"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert _json.loads(listener.stdout.readline())  # it says when it is subscribed
        _load(netns, _tcp_lines(1500), tmp_path)
        netns.run("conntrack", "-F")  # destroy events cannot be delivered: the entries stay counted
        _rc, doc = doctor("--netns", netns.name, "--interval", "0")
        (f,) = by(doc, "CT004", netns.name)
        assert f["evidence"]["gap"] >= 1000 and f["evidence"]["listed"]["value"] == 0
        holders = [x for x in f["evidence"]["event_listeners"] if x.get("pid") == listener.pid or
                   x.get("comm", "").startswith("python")]
        assert holders, f["evidence"]["event_listeners"]
        assert "conntrack event listener pid" in f["summary"]
    finally:
        listener.kill()
        listener.wait(timeout=10)
