"""`status` on host images built from real formats: the numbers an operator would read."""

import json
import tarfile

from tests.conftest import IMAGES, assert_one_line_error, run_cli, run_json

RHEL7 = IMAGES / "sosreport-gw01-rhel7"
K8S = IMAGES / "sosreport-node7-k8s"


def test_rhel7_sosreport_full_table_and_drift():
    rc, doc = run_json("--root", str(RHEL7), "status")
    assert rc == 0
    assert doc["host"] == {"hostname": "gw01.example.net", "kernel": "3.10.0-1160.el7.x86_64",
                           "source": "sosreport", "root": str(RHEL7), "cpus": None, "mem_total": 3880244 * 1024}
    (ns,) = doc["namespaces"]
    assert (ns["name"], ns["count"], ns["max"], ns["buckets"], ns["fill"]) == ("init", 65536, 65536, 16384, 1.0)
    assert ns["sources"]["count"] == "sos_commands/kernel/sysctl_-a"
    assert ns["stats"]["drop"] == 27 and ns["stats"]["insert_failed"] == 4
    assert ns["memory"]["estimated"] is True
    drift = {d["key"]: d for d in doc["settings"]["drift"]}
    assert drift["net.netfilter.nf_conntrack_max"]["persisted"] == "1048576"
    assert drift["net.netfilter.nf_conntrack_max"]["live"] == "65536"
    assert drift["net.netfilter.nf_conntrack_max"]["file"] == "/etc/sysctl.conf"
    assert drift["net.netfilter.nf_conntrack_tcp_timeout_established"]["file"] == "/etc/sysctl.d/90-conntrack.conf"
    mods = {m["name"]: m for m in doc["modules"]}
    assert mods["nf_conntrack"]["state"] == "loaded" and mods["nf_conntrack"]["refcount"] == 5
    assert mods["nf_conntrack_ipv4"]["state"] == "loaded" and mods["nf_conntrack_ipv6"]["state"] == "absent"
    assert doc["kernel_log"]["events"]["table_full"] == 3  # the same 3 in dmesg and /var/log/messages


def test_k8s_sosreport_namespaces_from_sos_names():
    rc, doc = run_json("--root", str(K8S), "--netns", "all", "status")
    assert rc == 0
    by = {n["name"]: n for n in doc["namespaces"]}
    assert list(by) == ["init", "cni-4f1e"], "init is listed first"
    assert by["init"]["count"] == 1843 and by["init"]["sources"]["count"] == "/proc/sys/net/netfilter/nf_conntrack_count"
    assert by["init"]["stats"]["clashres"] == 0x12 + 9 + 3 + 1
    pod = by["cni-4f1e"]
    assert pod["count"] == 131072 and pod["max"] == 131072 and pod["fill"] == 1.0
    assert pod["sources"]["count"].endswith("ip_netns_exec_cni-4f1e_sysctl_-a")
    assert pod["stats"]["drop"] == 4191 and pod["sources"]["stats"].endswith("ip_netns_exec_cni-4f1e_conntrack_-S")
    nd = {d["key"]: d for d in doc["settings"]["non_default"]}
    assert nd["net.netfilter.nf_conntrack_tcp_timeout_close_wait"]["default"] == 60
    assert nd["net.netfilter.nf_conntrack_max"]["default"] == 262144  # 16 GiB on 6.18


def test_netns_selection_in_an_image():
    rc, doc = run_json("--root", str(K8S), "status", "--netns", "cni-4f1e")
    assert [n["name"] for n in doc["namespaces"]] == ["cni-4f1e"]
    rc, _out, err = run_cli("--root", str(K8S), "status", "--netns", "nope")
    assert_one_line_error(rc, err, code=2, contains="no such network namespace")


def test_global_options_before_or_after_the_command():
    a = run_cli("--root", str(K8S), "--netns", "all", "--format", "json", "status")
    b = run_cli("status", "--root", str(K8S), "--netns", "all", "--format", "json")
    assert a[0] == b[0] == 0 and json.loads(a[1]) == json.loads(b[1])


def test_sosreport_tarball_equals_directory(tmp_path):
    arc = tmp_path / "sosreport-node7-2026-11-21-xyz.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(K8S, arcname="sosreport-node7-2026-11-21-xyz")
    rc, a = run_json("--root", str(K8S), "--netns", "all", "status")
    rc2, b = run_json("--root", str(arc), "--netns", "all", "status")
    for d in (a, b):
        d["host"].pop("root")
    assert rc == rc2 == 0 and a == b


def test_text_output_shows_the_fill_and_drift():
    rc, out, _err = run_cli("--root", str(RHEL7), "status")
    assert rc == 0
    assert "65,536  65,536  100%" in out
    assert "net.netfilter.nf_conntrack_max: live 65536, persisted 1048576" in out


def test_bad_usage_is_one_line():
    rc, out, err = run_cli("--root", str(RHEL7), "status", "--format", "nagios")
    assert_one_line_error(rc, err, code=3, contains="--format nagios")  # Nagios: every error is UNKNOWN
    assert out.startswith("CONNTRACK UNKNOWN - --format nagios is not available")
    rc, _out, err = run_cli("status", "--interval", "abc")
    assert rc == 2 and "Traceback" not in err
