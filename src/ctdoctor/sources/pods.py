"""Which Kubernetes pod (and container) holds a network namespace.

Live: the processes in the netns (``/proc/<pid>/ns/net``) -> their cgroup (``/proc/<pid>/cgroup``:
the pod UID and container id, for the cgroupfs and systemd cgroup drivers, cgroup v1 and v2) ->
the runtime's own metadata under the host's root (``--host-root`` when ctdoctor runs in a
container): containerd's and CRI-O's ``config.json`` annotations, kubelet's
``/var/log/pods/<namespace>_<pod>_<uid>/`` folders, and the ``cni-<uuid>`` netns path a
sandbox's spec names. Offline, the same annotations from what sos captured (``crictl inspectp``
and ``crictl inspect`` output of the crio/containerd plugins).

Cgroup paths, as kubelet makes them::

    cgroupfs: /kubepods/besteffort/pod0f1e.../<64-hex container id>
              /kubepods/pod0f1e.../<id>                         (Guaranteed QoS)
    systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e_..._.slice/cri-containerd-<id>.scope
              .../crio-<id>.scope, .../docker-<id>.scope
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ctdoctor.sources.hostroot import HostRoot
    from ctdoctor.sources.netns import NetnsRef

from ctdoctor.model.pods import Pod

_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_CONTAINER = re.compile(r"(?:cri-containerd-|crio-|docker-|containerd-)?([0-9a-f]{64})(?:\.scope)?$")


def parse_cgroup(text: str) -> tuple[str, str] | None:
    """(pod UID with dashes, container id or "") from ``/proc/<pid>/cgroup`` (v1 or v2 lines)."""
    for ln in text.splitlines():
        path = ln.split(":", 2)[-1]
        if "kubepods" not in path:
            continue
        m = _POD_UID.search(path)
        if not m:
            continue
        uid = m.group(1).replace("_", "-")
        last = path.rstrip("/").rsplit("/", 1)[-1]
        c = _CONTAINER.search(last)
        return uid, c.group(1) if c else ""
    return None


def parse_pod_log_dirs(names: list[str]) -> dict[str, tuple[str, str]]:
    """kubelet's ``/var/log/pods/<namespace>_<pod>_<uid>`` folder names -> {uid: (namespace, pod)}."""
    out = {}
    for n in names:
        parts = n.rsplit("_", 1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f-]{36}", parts[1]):
            continue
        ns, _, pod = parts[0].partition("_")
        if ns and pod:
            out[parts[1]] = (ns, pod)
    return out


class RuntimeInfo(NamedTuple):
    """What a runtime's config.json (or crictl's inspect output) says about one container or sandbox."""

    container_id: str
    namespace: str
    pod: str
    uid: str
    container: str  # "" for a sandbox
    netns_path: str  # the sandbox's network namespace path (/var/run/netns/cni-...), when it names one


# containerd CRI and CRI-O annotation names
_ANN = {
    "namespace": ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"),
    "pod": ("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"),
    "uid": ("io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"),
    "container": ("io.kubernetes.cri.container-name", "io.kubernetes.container.name"),
}


def parse_runtime_spec(text: str, container_id: str = "") -> RuntimeInfo | None:
    """An OCI ``config.json`` written by containerd or CRI-O, or ``crictl inspect[p]`` JSON (whose
    ``info.runtimeSpec`` is that spec and ``status.metadata`` names the pod)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    spec: dict[str, Any] = doc
    meta: dict[str, Any] = {}
    if isinstance(doc.get("info"), dict) and isinstance(doc["info"].get("runtimeSpec"), dict):
        spec = doc["info"]["runtimeSpec"]
        status: dict[str, Any] = doc["status"] if isinstance(doc.get("status"), dict) else {}
        meta = status["metadata"] if isinstance(status.get("metadata"), dict) else {}
        container_id = container_id or str(status.get("id") or "")
    ann: dict[str, Any] = spec["annotations"] if isinstance(spec.get("annotations"), dict) else {}

    def pick(key: str) -> str:
        for a in _ANN[key]:
            v = ann.get(a)
            if isinstance(v, str) and v:
                return v
        return ""

    namespace = pick("namespace") or str(meta.get("namespace") or "")
    pod = pick("pod") or str(meta.get("name") or "")
    uid = pick("uid") or str(meta.get("uid") or "")
    container = pick("container")
    if ann.get("io.kubernetes.cri.container-type") == "sandbox" or ann.get("io.kubernetes.cri-o.ContainerType") \
            == "sandbox" or container == "POD":
        container = ""
    netns = ""
    linux: dict[str, Any] = spec["linux"] if isinstance(spec.get("linux"), dict) else {}
    for ns in linux.get("namespaces") or []:
        if isinstance(ns, dict) and ns.get("type") == "network" and isinstance(ns.get("path"), str):
            netns = ns["path"]
    if not (namespace or pod or uid):
        return None
    return RuntimeInfo(container_id, namespace, pod, uid, container, netns)


def netns_name_of(path: str) -> str:
    """``/var/run/netns/cni-5f3c...`` -> ``cni-5f3c...`` (the ip-netns name); "" for other paths."""
    m = re.match(r"^/(?:var/)?run/netns/([^/]+)$", path or "")
    return m.group(1) if m else ""


# where the runtimes keep each container's OCI spec, under the host's root
CONTAINERD_TASKS = ("run/containerd/io.containerd.runtime.v2.task/k8s.io", "run/containerd/io.containerd.runtime.v1.linux/k8s.io")
CRIO_CONTAINERS = "run/containers/storage/overlay-containers"


class Resolver:
    """Pods of live namespaces: ``resolve(pids)`` -> Pod or None. ``host`` reads the host's files (a
    HostRoot over ``/`` or ``--host-root``); ``proc`` reads /proc (the host's, with hostPID)."""

    def __init__(self, host: HostRoot, proc: HostRoot):
        self.host, self.proc = host, proc
        self._uids: dict[str, tuple[str, str]] | None = None
        self._specs: dict[str, RuntimeInfo | None] = {}
        self._sandboxes: dict[str, RuntimeInfo] | None = None

    def _spec(self, cid: str) -> RuntimeInfo | None:
        if cid not in self._specs:
            info = None
            for base in (*CONTAINERD_TASKS, f"{CRIO_CONTAINERS}"):
                rel = f"{base}/{cid}/userdata/config.json" if base == CRIO_CONTAINERS else f"{base}/{cid}/config.json"
                text = self.host.read_text(rel, limit=4 << 20)
                if text:
                    info = parse_runtime_spec(text, cid)
                    if info:
                        break
            self._specs[cid] = info
        return self._specs[cid]

    def _by_uid(self, uid: str) -> tuple[str, str] | None:
        if self._uids is None:
            self._uids = parse_pod_log_dirs(self.host.listdir("var/log/pods"))
        return self._uids.get(uid)

    def resolve(self, pids: tuple[int, ...] | list[int]) -> Pod | None:
        """The pod the processes belong to (the first that says), and the first non-sandbox container."""
        found: Pod | None = None
        container = ""
        for pid in pids:
            got = parse_cgroup(self.proc.read_text(f"proc/{pid}/cgroup", limit=64 << 10) or "")
            if got is None:
                continue
            uid, cid = got
            info = self._spec(cid) if cid else None
            if info is not None and info.container and not container:
                container = info.container
            if found is None:
                if info is not None and info.pod:
                    found = Pod(info.namespace, info.pod, info.uid or uid)
                else:
                    named = self._by_uid(uid)
                    found = Pod(named[0], named[1], uid) if named else Pod("", f"pod {uid}", uid)
        return found._replace(container=container) if found else None

    def by_netns_name(self, name: str) -> Pod | None:
        """A ``cni-<uuid>`` netns with no process seen in it: the sandbox spec that names its path."""
        if self._sandboxes is None:
            self._sandboxes = {}
            for base in CONTAINERD_TASKS:
                for cid in self.host.listdir(base):
                    info = self._spec(cid)
                    if info is not None and info.netns_path:
                        self._sandboxes[netns_name_of(info.netns_path)] = info
            for cid in self.host.listdir(CRIO_CONTAINERS):
                info = self._spec(cid)
                if info is not None and info.netns_path:
                    self._sandboxes[netns_name_of(info.netns_path)] = info
        info = self._sandboxes.get(name)
        return Pod(info.namespace, info.pod, info.uid) if info else None


def from_captures(root: HostRoot) -> dict[str, Pod]:
    """Offline: {ip-netns name: Pod} from the ``crictl inspectp`` (and ``inspect``) JSON that sos's
    crio and containerd plugins captured, and from a ctdoctor bundle's own record (meta.json)."""
    out: dict[str, Pod] = {}
    for plugin in ("crio", "containerd", "cri-o", "kubernetes", "container_runtime"):
        stack = [f"sos_commands/{plugin}"]
        seen = 0
        while stack and seen < 5000:
            d = stack.pop()
            for n in root.listdir(d):
                rel = f"{d}/{n}"
                seen += 1
                if root.is_dir(rel):
                    stack.append(rel)
                    continue
                if "inspect" not in n:
                    continue
                text = root.read_text(rel, limit=8 << 20) or ""
                info = parse_runtime_spec(text.strip()) if text.lstrip().startswith("{") else None
                if info is not None and info.netns_path and info.pod:
                    out.setdefault(netns_name_of(info.netns_path), Pod(info.namespace, info.pod, info.uid))
    return out


def for_refs(refs: Iterable[NetnsRef], host: HostRoot, proc: HostRoot) -> dict[int, Pod]:
    """{inode: Pod} of the live namespaces (``netns.NetnsRef``) a Kubernetes pod holds."""
    resolver = Resolver(host, proc)
    out = {}
    for ref in refs:
        if ref.is_init:
            continue
        pod = resolver.resolve(ref.pids) if ref.pids else None
        if pod is None and ref.owner == "ip netns" and ref.name.startswith("cni-"):
            pod = resolver.by_netns_name(ref.name)
        if pod is not None:
            out[ref.inode] = pod
    return out
