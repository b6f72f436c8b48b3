"""Pod identity on the real kernel: a process in a throwaway netns is placed in a cgroup with the
path kubelet gives it (cgroupfs driver, v1 ``pids`` hierarchy, and the systemd driver's shape under
cgroup2), with containerd-shaped metadata and kubelet's pod log folder under a temporary
``--host-root``; every command names the pod, and ``--netns pod:NS/NAME`` selects it."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from tests.conftest import Netns, needs_kernel, run_cli

pytestmark = [needs_kernel, pytest.mark.kernel]


def _cgroup_dirs(uid: str, cid: str) -> list[str]:
    out = []
    v1 = "/sys/fs/cgroup/pids"
    if os.path.isdir(v1):
        out.append(f"{v1}/kubepods/besteffort/pod{uid}/{cid}")
    return out


@pytest.fixture
def pod_in_netns(tmp_path):
    uid = str(uuid.uuid4())
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    ns_name, pod_name = "ctdt-team", f"web-{uuid.uuid4().hex[:5]}"
    dirs = _cgroup_dirs(uid, cid)
    if not dirs:
        pytest.skip("no cgroup v1 pids hierarchy to place a process in")
    host = tmp_path / "host"
    # kubelet's pod log folder and containerd's task spec (annotations as containerd's CRI writes them)
    (host / f"var/log/pods/{ns_name}_{pod_name}_{uid}/app").mkdir(parents=True)
    task = host / f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{cid}"
    task.mkdir(parents=True)
    (task / "config.json").write_text(json.dumps({"ociVersion": "1.1.0", "annotations": {
        "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.sandbox-name": pod_name, "io.kubernetes.cri.sandbox-namespace": ns_name,
        "io.kubernetes.cri.sandbox-uid": uid}}))
    made = []
    with Netns("pod") as ns:
        holder = subprocess.Popen(["ip", "netns", "exec", ns.name, "sleep", "60"])
        try:
            for d in dirs:
                os.makedirs(d, exist_ok=True)
                made.append(d)
                with open(f"{d}/cgroup.procs", "w") as f:
                    f.write(str(holder.pid))
            yield ns, f"{ns_name}/{pod_name}", host
        finally:
            holder.kill()
            holder.wait(timeout=10)
            for d in made:  # the leaf, then the kubepods folders we made (only when empty)
                for p in (d, os.path.dirname(d), os.path.dirname(os.path.dirname(d)),
                          os.path.dirname(os.path.dirname(os.path.dirname(d)))):
                    try:
                        os.rmdir(p)
                    except OSError:
                        break


def test_status_doctor_and_selection_name_the_pod(pod_in_netns):
    ns, label, host = pod_in_netns
    rc, out, err = run_cli("status", "--netns", "all", "--host-root", str(host), "--format", "json",
                           "--interval", "0")
    doc = json.loads(out)
    (mine,) = [n for n in doc["namespaces"] if n["name"] == ns.name]
    assert mine["pod"]["namespace"] + "/" + mine["pod"]["name"] == label and mine["pod"]["container"] == "app"
    assert mine["owner"] == f"pod {label}"
    rc, out, err = run_cli("status", "--netns", f"pod:{label}", "--host-root", str(host), "--format", "json",
                           "--interval", "0")
    assert rc == 0 and [n["name"] for n in json.loads(out)["namespaces"]] == [ns.name], err
    rc, out, err = run_cli("doctor", "--netns", f"pod:{label.split('/')[0]}/*", "--host-root", str(host),
                           "--format", "json", "--interval", "0")
    doc = json.loads(out)
    assert [n["pod"] for n in doc["namespaces"]] == [label], err
    # several names and a glob at once
    rc, out, err = run_cli("status", "--netns", f"init,{ns.name[:6]}*", "--format", "json", "--interval", "0")
    names = [n["name"] for n in json.loads(out)["namespaces"]]
    assert names[0] == "init" and ns.name in names


def test_without_runtime_metadata_the_pod_uid_still_shows(pod_in_netns, tmp_path):
    ns, _label, _host = pod_in_netns
    empty = tmp_path / "empty"
    empty.mkdir()
    _rc, out, _err = run_cli("status", "--netns", ns.name, "--host-root", str(empty), "--format", "json",
                           "--interval", "0")
    (mine,) = json.loads(out)["namespaces"]
    assert mine["pod"]["name"].startswith("pod ") and mine["pod"]["uid"] in mine["pod"]["name"]


def test_collect_records_the_pod_and_reads_it_back(pod_in_netns, tmp_path):
    ns, label, host = pod_in_netns
    out_file = tmp_path / "b.tar.gz"
    rc, _out, err = run_cli("collect", "--no-entries", "--host-root", str(host), "-o", str(out_file))
    assert rc == 0, err
    rc, out, err = run_cli("--root", str(out_file), "status", "--netns", f"pod:{label}", "--format", "json")
    (mine,) = json.loads(out)["namespaces"]
    assert mine["name"] == ns.name and mine["pod"]["namespace"] + "/" + mine["pod"]["name"] == label
    rc, out, err = run_cli("--root", str(out_file), "doctor", "--format", "json", "--netns", ns.name)
    assert json.loads(out)["namespaces"][0]["pod"] == label


def test_the_exporter_labels_the_netns_by_pod(pod_in_netns, tmp_path):
    ns, label, host = pod_in_netns
    out = tmp_path / "tf"
    out.mkdir()
    rc, _o, err = run_cli("exporter", "--netns", "all", "--host-root", str(host), "--textfile", str(out), "--once")
    assert rc == 0, err
    text = (out / "ctdoctor.prom").read_text()
    namespace, pod = label.split("/")
    line = next(ln for ln in text.splitlines() if ln.startswith("ctdoctor_netns_info{") and f'netns="{ns.name}"' in ln)
    assert f'namespace="{namespace}"' in line and f'pod="{pod}"' in line and 'container="app"' in line
