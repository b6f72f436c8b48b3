"""The lab's scenarios on the real kernel: what a user observes in each incident."""

import os
import signal
import subprocess
import sys

import pytest

from ctdoctor import lab as labmod
from tests.conftest import assert_one_line_error, needs_kernel, run_cli, run_json, sh, wait_until

pytestmark = [needs_kernel, pytest.mark.kernel]


def _max():
    return int(open("/proc/sys/net/netfilter/nf_conntrack_max").read())


def test_table_full(lab):
    run = lab("table-full")
    o = run.observed
    assert o["count"] == o["max"] == _max()
    assert o["new_connections_failed"] == 3, o["new_connections"]
    assert all(a.get("error") == "TimeoutError" for a in o["new_connections"])
    assert o["held_connection_still_works"] is True
    assert len(o["established_sockets"]) == 2, "both ends of the held connection are still ESTABLISHED"
    assert o["drop_delta"] >= 3 and o["early_drop_delta"] == 0
    assert o["kernel_log"], "the kernel logs table full"
    if os.uname().release.split(".")[:2] >= ["6", "18"] or int(os.uname().release.split(".")[0]) > 6:
        assert o["kernel_log_names_netns"], o["kernel_log"]
        assert all(f"table full in netns {run.netns.inode}, dropping packet" in ln for ln in o["kernel_log"])


def test_early_drop(lab):
    o = lab("early-drop", 300).observed
    assert o["max"] - 10 <= o["count"] <= o["max"]  # evictions and inserts race by an entry or two
    assert o["early_drop_delta"] >= 0.9 * 300 and o["drop_delta"] == 0


def test_time_wait_pileup(lab):
    o = lab("time-wait-pileup", 500).observed
    assert o["time_wait"] == 500 and o["time_wait_share"] > 0.99
    assert o["time_wait_timeout"] == 120 and 100 < o["max_remaining_timeout"] <= 120


def test_syn_unreplied(lab):
    o = lab("syn-unreplied", 200).observed
    assert o["syn_sent_unreplied"] == 200 and o["state_mix"] == {"SYN_SENT [UNREPLIED]": 200}


def test_nat_loopback(lab):
    o = lab("nat-loopback", 10).observed
    assert o["connections_ok"] == 10 and o["natted_entries"] == 10
    assert o["example"]["orig"].endswith("-> 127.0.0.1:8080") and o["example"]["reply"].startswith("127.0.0.1:9090")


def test_untracked(lab):
    o = lab("untracked", 4).observed
    assert o["connect_without_untracked_accept"] is False, "a stateful filter drops untracked packets"
    assert o["connections_ok"] == 4
    assert o["entries_for_port"] == 0 and o["established_sockets_for_port"] == 8


def test_table_full_evidence_is_the_labs_own_while_another_netns_drops(lab):
    """On a node with several full namespaces, the lab reports only its own kernel log lines."""
    import threading

    other = lab("table-full", 1)
    stop = threading.Event()
    probe = ("import socket\ns = socket.socket()\ns.settimeout(0.3)\ntry:\n    s.connect(('127.0.0.1', 9))\n"
             "except OSError:\n    pass\n")

    def noise():  # new connections in the other full netns: its own table-full lines, now and then
        while not stop.is_set():
            subprocess.run(["ip", "netns", "exec", other.netns.name, sys.executable, "-c", probe], capture_output=True)
            stop.wait(2.0)

    t = threading.Thread(target=noise, daemon=True)
    t.start()
    try:
        mine = lab("table-full", 2)
    finally:
        stop.set()
        t.join(timeout=10)
    log = mine.observed["kernel_log"]
    assert not any(f"in netns {other.netns.inode}," in ln for ln in log), log
    if mine.observed["kernel_log_names_netns"] or log:
        assert all(f"in netns {mine.netns.inode}," in ln for ln in log), log


def test_count_mismatch(lab):
    o = lab("count-mismatch", 1000).observed
    assert o["loaded"] == 1000 and o["listed_while_stuck"] == 0
    assert o["count_while_stuck"] >= 990, "deleted entries stay counted while their events are undelivered"
    assert o["count_after_listener_exit"] == 0


def test_gc_lag(lab, netns):
    # long-lived entries elsewhere, as on any node: the kernel's gc paces its passes by the timeouts it
    # sees (a table of 2 s entries alone has it come every second or two; with these, up to a minute),
    # so the pass that would collect the expired entries before they are counted is not due
    netns.load_established(20000)
    o = lab("gc-lag", 1500).observed
    assert o["loaded"] == 1500
    # expired, not yet collected: still counted; the listing skips them and frees what it passes
    assert o["count_before_listing"] >= 1000 and o["listed"] == 0 and o["count_after_listing"] <= 20


def test_lab_cli_run_and_list():
    rc, doc = run_json("lab", "run", "syn-unreplied", "--scale", "20")
    assert rc == 0 and doc["observed"]["syn_sent_unreplied"] == 20 and doc["kept"] is False
    rc, out, err = run_cli("lab", "list")
    assert rc == 0
    for name in ("table-full", "early-drop", "time-wait-pileup", "syn-unreplied", "nat-loopback", "untracked",
                 "count-mismatch", "gc-lag"):
        assert name in out
    rc, out, err = run_cli("lab", "run", "nope")
    assert_one_line_error(rc, err, code=2, contains="no lab scenario")
    rc, out, err = run_cli("lab", "run", "syn-unreplied", "--scale", "0")
    assert_one_line_error(rc, err, code=2, contains="--scale")


def test_keep_then_clean():
    """Tests touch only what they made: a user's own kept lab namespaces survive (clean NAME)."""
    rc, doc = run_json("lab", "run", "nat-loopback", "--scale", "2", "--keep")
    assert rc == 0 and doc["netns"] in labmod.leftovers()
    rc, out, err = run_cli("lab", "clean", doc["netns"])
    assert rc == 0 and doc["netns"] in out and doc["netns"] not in labmod.leftovers()
    rc, out, err = run_cli("lab", "clean", "not-a-lab-ns")
    assert_one_line_error(rc, err, code=2, contains="not a lab namespace")


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])  # the parent
        except (OSError, ValueError, IndexError):
            return False
    return False


def _start_long_run():
    before = set(labmod.leftovers())
    p = subprocess.Popen([sys.executable, "-m", "ctdoctor", "lab", "run", "time-wait-pileup", "--scale", "200000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def mine():
        """New lab namespaces with this run's traffic in them: another session's lab may start meanwhile
        (never to be cleaned here), and with the traffic running, a signal lands mid-run, not at set-up."""
        return {n for n in set(labmod.leftovers()) - before
                if any(_descends(int(x), p.pid) for x in sh("ip", "netns", "pids", n, check=False).stdout.split())}

    return p, wait_until(mine, timeout=30, what="the scenario's netns with its traffic")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_removes_its_netns(sig):
    p, mine = _start_long_run()
    p.send_signal(sig)
    p.wait(timeout=30)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr.read().decode()
    assert not mine & set(labmod.leftovers())


def test_killed_run_is_cleaned_by_lab_clean():
    p, mine = _start_long_run()
    p.kill()
    p.wait(timeout=10)
    assert mine <= set(labmod.leftovers())
    rc, _out, _err = run_cli("lab", "clean", *sorted(mine))
    assert rc == 0 and not mine & set(labmod.leftovers())


def test_lab_without_root_says_so():
    rc, _out, err = run_cli("lab", "run", "table-full", as_nobody=True)
    assert_one_line_error(rc, err, code=2, contains="root")


def test_lab_without_conntrack_tool_says_which(tmp_path):
    for tool in ("ip", "nft", "ss"):
        os.symlink(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip(), tmp_path / tool)
    rc, out, err = run_cli("lab", "run", "table-full", env={"PATH": str(tmp_path)})
    assert_one_line_error(rc, err, code=2, contains="'conntrack' command (Debian package conntrack)")
    rc, out, err = run_cli("lab", "list", env={"PATH": str(tmp_path)})
    assert rc == 0 and "cannot run here" in out


def test_lab_refuses_a_host_image(tmp_path):
    rc, _out, _err = run_cli("--root", str(tmp_path), "lab", "list")
    assert rc == 2


def test_k8s_node_names_pods_live_through_collect_and_in_the_exporter(lab, tmp_path):
    import json

    run = lab("k8s-node", 2)
    host = run.observed["host_root"]
    by_pod = {p["pod"]: p for p in run.observed["pods"]}
    full = by_pod["shop/checkout-lab"]
    assert full["count"] == run.observed["max"] and len(by_pod) == 4
    rc, out, err = run_cli("status", "--netns", "all", "--host-root", host, "--format", "json", "--interval", "0")
    named = {n["name"]: n for n in json.loads(out)["namespaces"]}
    for p in run.observed["pods"]:
        got = named[p["netns"]]["pod"]
        assert f"{got['namespace']}/{got['name']}" == p["pod"] and got["container"] == "app", (p, got)
    rc, out, err = run_cli("doctor", "--netns", "pod:shop/checkout-lab", "--host-root", host, "--format", "json",
                           "--interval", "0")
    doc = json.loads(out)
    assert rc == 2 and [n["pod"] for n in doc["namespaces"]] == ["shop/checkout-lab"], err
    (ct18,) = [f for f in doc["findings"] if f["id"] == "CT018"]
    assert ct18["severity"] == "critical" and ct18["pod"] == "shop/checkout-lab"
    assert f"{full['netns']} (shop/checkout-lab)" in ct18["summary"]
    bundle = tmp_path / "node.tar.gz"
    rc, _out, err = run_cli("collect", "--no-entries", "--host-root", host, "-o", str(bundle))
    assert rc == 0, err
    rc, out, err = run_cli("--root", str(bundle), "doctor", "--netns", "pod:shop/*", "--format", "json")
    doc = json.loads(out)
    assert [f["pod"] for f in doc["findings"] if f["id"] == "CT018"] == ["shop/checkout-lab"], err
    tf = tmp_path / "tf"
    tf.mkdir()
    rc, _out, err = run_cli("exporter", "--netns", "all", "--host-root", host, "--textfile", str(tf), "--once")
    assert rc == 0, err
    info = [ln for ln in (tf / "ctdoctor.prom").read_text().splitlines()
            if ln.startswith("ctdoctor_netns_info{") and f'netns="{full["netns"]}"' in ln]
    assert info and 'namespace="shop"' in info[0] and 'pod="checkout-lab"' in info[0]
