"""Pod identity parsers on the shapes kubelet, containerd, CRI-O and crictl write (cgroup paths from
kubelet's cgroupfs and systemd drivers; annotation names from containerd's CRI and CRI-O; crictl
inspectp's status/info layout), and offline from what sos captures."""

from __future__ import annotations

import json
import shutil

from ctdoctor.sources import pods
from tests.conftest import IMAGES, run_cli

UID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
CID = "4c5d6e7f" * 8


def test_cgroup_paths_of_both_drivers_and_both_versions():
    systemd_v2 = ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                  f"{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope\n")
    cgroupfs_v1 = f"12:pids:/kubepods/besteffort/pod{UID}/{CID}\n11:memory:/kubepods/besteffort/pod{UID}/{CID}\n"
    guaranteed = f"0::/kubepods/pod{UID}/{CID}\n"
    crio = f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope\n"
    for text in (systemd_v2, cgroupfs_v1, guaranteed, crio):
        assert pods.parse_cgroup(text) == (UID, CID), text
    assert pods.parse_cgroup("0::/system.slice/containerd.service\n") is None
    assert pods.parse_cgroup("0::/user.slice/user-0.slice/session-1.scope\n") is None


def test_runtime_specs_and_crictl_output():
    containerd = {"annotations": {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-name":
                                  "coredns-5d78c9869d-x2x4p", "io.kubernetes.cri.sandbox-namespace": "kube-system",
                                  "io.kubernetes.cri.sandbox-uid": UID},
                  "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-5f3c"}]}}
    info = pods.parse_runtime_spec(json.dumps(containerd), CID)
    assert info == pods.RuntimeInfo(CID, "kube-system", "coredns-5d78c9869d-x2x4p", UID, "", "/var/run/netns/cni-5f3c")
    crio = {"annotations": {"io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.namespace": "shop",
                            "io.kubernetes.pod.uid": UID, "io.kubernetes.container.name": "nginx",
                            "io.kubernetes.cri-o.ContainerType": "container"}}
    got = pods.parse_runtime_spec(json.dumps(crio))
    assert got is not None and (got.namespace, got.pod, got.container) == ("shop", "web-0", "nginx")
    inspectp = {"status": {"id": "9a8b", "metadata": {"attempt": 0, "name": "web-0", "namespace": "shop", "uid": UID}},
                "info": {"runtimeSpec": {"linux": {"namespaces": [{"type": "network",
                                                                   "path": "/var/run/netns/cni-77aa"}]}}}}
    got = pods.parse_runtime_spec(json.dumps(inspectp))
    assert got is not None and got.netns_path == "/var/run/netns/cni-77aa" and got.pod == "web-0"
    assert pods.parse_runtime_spec("not json") is None and pods.parse_runtime_spec("[]") is None
    assert pods.netns_name_of("/var/run/netns/cni-77aa") == "cni-77aa" and pods.netns_name_of("/proc/1/ns/net") == ""
    assert pods.parse_pod_log_dirs([f"shop_web-0_{UID}", "garbage", f"x_{UID}"]) == {UID: ("shop", "web-0")}


def _k8s_sosreport_with_crictl(tmp_path):
    """The k8s sosreport image plus what sos's crio plugin captures of its pod: ``crictl inspectp`` JSON
    whose runtime spec names the pod's netns (cni-4f1e)."""
    img = tmp_path / "sos"
    shutil.copytree(IMAGES / "sosreport-node7-k8s", img, symlinks=True)
    d = img / "sos_commands/crio/pods"
    d.mkdir(parents=True)
    (d / "crictl_inspectp_9a8b7c").write_text(json.dumps({
        "status": {"id": "9a8b7c", "metadata": {"attempt": 0, "name": "dns-cache-7f9", "namespace": "kube-system",
                                                "uid": UID}},
        "info": {"runtimeSpec": {"linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/cni-4f1e"}]}}}}))
    return img


def test_a_sosreport_names_its_pods_from_crictl_inspectp(tmp_path):
    img = _k8s_sosreport_with_crictl(tmp_path)
    rc, out, err = run_cli("--root", str(img), "status", "--netns", "pod:kube-system/dns-cache-*", "--format", "json")
    assert rc == 0, err
    (ns,) = json.loads(out)["namespaces"]
    assert ns["name"] == "cni-4f1e" and ns["pod"]["name"] == "dns-cache-7f9" and ns["owner"] == "pod kube-system/dns-cache-7f9"
    rc, out, err = run_cli("--root", str(img), "--format", "json", "--netns", "all")
    doc = json.loads(out)
    named = [f for f in doc["findings"] if f["netns"] == "cni-4f1e"]
    assert named and all(f["pod"] == "kube-system/dns-cache-7f9" for f in named)
    assert any("cni-4f1e (kube-system/dns-cache-7f9)" in f["summary"] for f in named)
    rc, out, err = run_cli("--root", str(img), "status", "--netns", "pod:nope/*")
    assert rc == 2 and "no such network namespace" in err


def test_top_groups_by_pod_and_kubernetes_namespace(tmp_path):
    img = _k8s_sosreport_with_crictl(tmp_path)
    rc, out, err = run_cli("--root", str(img), "top", "--netns", "all", "--by", "pod", "--format", "json")
    rows = {r["key"]["pod"]: r["count"] for r in json.loads(out)["rows"]}
    assert rc == 0 and rows == {"kube-system/dns-cache-7f9": 2, "(no pod: init)": 3}, (rows, err)
    rc, out, err = run_cli("--root", str(img), "top", "--netns", "all", "--by", "k8s-namespace,state", "--format",
                           "json")
    keys = {(r["key"]["k8s-namespace"], r["key"]["state"]) for r in json.loads(out)["rows"]}
    assert ("kube-system", "ESTABLISHED") in keys
    rc, out, err = run_cli("--root", str(img), "top", "--by", "pod,netns")
    assert rc == 2 and "one of netns, pod, k8s-namespace" in err
