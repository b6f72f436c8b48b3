"""What `apply` writes, computed as data: the files that make conntrack settings survive.

- ``/etc/sysctl.d/90-ctdoctor.conf``: the net.netfilter values (kept across runs:
  applying --max later keeps the timeouts set earlier);
- ``/etc/modprobe.d/ctdoctor.conf``: ``options nf_conntrack hashsize=N`` (the
  buckets at module load);
- ``/etc/modules-load.d/ctdoctor.conf``: ``nf_conntrack`` (loaded before
  systemd-sysctl runs, so its keys exist when sysctl.d is applied);
- ``/etc/udev/rules.d/90-ctdoctor-conntrack.rules``: re-applies the
  net.netfilter sysctls whenever the module is added (sysctl.d(5), example 2);
- ``IPTABLES_SYSCTL_LOAD_LIST=".nf_conntrack"`` in ``/etc/sysconfig/iptables-config``
  where that file exists (RHEL family), so a firewall restart re-applies them.
"""

from __future__ import annotations

import re

from ctdoctor.model.kernel import NF
from ctdoctor.sources.hostroot import HostRoot
from ctdoctor.sources.persisted import parse_sysctl_conf
from ctdoctor.write.files import FileChange, read_current

SYSCTL_FILE = "/etc/sysctl.d/90-ctdoctor.conf"
MODPROBE_FILE = "/etc/modprobe.d/ctdoctor.conf"
MODULES_LOAD_FILE = "/etc/modules-load.d/ctdoctor.conf"
UDEV_FILE = "/etc/udev/rules.d/90-ctdoctor-conntrack.rules"
IPTABLES_CONFIG = "/etc/sysconfig/iptables-config"
HEADER = "# Written by ctdoctor apply: conntrack settings that must survive reboots and module reloads.\n"


def sysctl_path(root: HostRoot) -> str:
    for p in ("/usr/lib/systemd/systemd-sysctl", "/lib/systemd/systemd-sysctl"):
        if root.exists(p.lstrip("/")):
            return p
    return "/lib/systemd/systemd-sysctl"  # as in sysctl.d(5)


def desired_settings(root: HostRoot, max_: int | None, buckets: int | None,
                     timeouts: dict[str, int]) -> dict[str, str]:
    """The settings 90-ctdoctor.conf should hold: what it holds now, updated with this run's values."""
    cur = read_current(root, SYSCTL_FILE)
    vals: dict[str, str] = {}
    if cur:
        for s in parse_sysctl_conf(cur, SYSCTL_FILE):
            vals[s.key] = s.value
    if max_ is not None:
        vals[NF + "nf_conntrack_max"] = str(max_)
    if buckets is not None:
        vals[NF + "nf_conntrack_buckets"] = str(buckets)
    for name, secs in timeouts.items():
        vals[NF + name] = str(secs)
    return vals


def compute(root: HostRoot, *, max_: int | None, buckets: int | None, timeouts: dict[str, int],
            module_builtin: bool) -> list[FileChange]:
    vals = desired_settings(root, max_, buckets, timeouts)
    changes = []
    # buckets: "-" = ignore a failure, for kernels where the sysctl is read-only (the modprobe option covers it)
    body = HEADER + "".join(f"{'-' if k.endswith('_buckets') else ''}{k} = {v}\n"
                            for k, v in sorted(vals.items(), key=_order))
    if vals or read_current(root, SYSCTL_FILE) is not None:  # no values of ours: the other pieces only
        changes.append(FileChange(SYSCTL_FILE, read_current(root, SYSCTL_FILE), body,
                                  why="the values, applied at boot by systemd-sysctl / sysctl --system"))
    hashsize = vals.get(NF + "nf_conntrack_buckets")
    if hashsize:
        changes.append(FileChange(MODPROBE_FILE, read_current(root, MODPROBE_FILE),
                                  HEADER + f"options nf_conntrack hashsize={hashsize}\n",
                                  why="the hash size when the module loads"))
    if not module_builtin:
        changes.append(FileChange(MODULES_LOAD_FILE, read_current(root, MODULES_LOAD_FILE),
                                  HEADER + "nf_conntrack\n",
                                  why="load conntrack before systemd-sysctl runs, so its keys exist"))
        changes.append(FileChange(UDEV_FILE, read_current(root, UDEV_FILE),
                                  HEADER + 'ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", '
                                  f'RUN+="{sysctl_path(root)} --prefix=/net/netfilter"\n',
                                  why="re-apply the net.netfilter sysctls whenever the module is (re)loaded"))
    cfg = read_current(root, IPTABLES_CONFIG)
    if cfg is not None:
        new = set_shell_var(cfg, "IPTABLES_SYSCTL_LOAD_LIST", ".nf_conntrack")
        changes.append(FileChange(IPTABLES_CONFIG, cfg, new, mode=0o600,
                                  why="the iptables service re-applies them after it reloads the modules"))
    return changes


def _order(kv: tuple[str, str]) -> tuple[int, str]:
    k = kv[0]
    return (0 if k.endswith("_max") else 1 if k.endswith("_buckets") else 2, k)


def set_shell_var(text: str, key: str, value: str) -> str:
    """Set KEY="value" in a sysconfig file: replace the active line, else the commented example, else append."""
    line = f'{key}="{value}"'
    existing = re.search(rf'^{key}=(.*)$', text, re.MULTILINE)
    if existing:
        cur = existing.group(1).strip().strip("\"'")
        if value in cur.split():
            return text
        merged = f'{key}="{(cur + " " + value).strip()}"'
        return text[:existing.start()] + merged + text[existing.end():]
    commented = re.search(rf'^#\s*{key}=.*$', text, re.MULTILINE)
    if commented:
        return text[:commented.end()] + "\n" + line + text[commented.end():]
    return text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
