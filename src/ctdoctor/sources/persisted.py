"""Configuration that survives a reboot or a module reload.

- sysctl.d(5): ``/etc/sysctl.d``, ``/run/sysctl.d``, ``/usr/local/lib/sysctl.d``,
  ``/usr/lib/sysctl.d``, ``/lib/sysctl.d``. All ``*.conf`` files are sorted by
  file name regardless of directory; a file in an earlier directory masks a
  same-named one in a later directory (a symlink to /dev/null masks it
  entirely); when several files set a key the lexicographically last file
  wins. ``/etc/sysctl.conf`` is applied last (procps ``sysctl --system``).
- modprobe.d(5): the same directory scheme; ``options``, ``install``,
  ``remove``, ``blacklist``, with ``\\`` line continuation.
- modules-load.d(5): one module name per line.
- udev rules that re-apply sysctls when nf_conntrack is loaded.
- ``/etc/sysconfig/iptables-config`` (RHEL family): IPTABLES_MODULES_UNLOAD,
  IPTABLES_SYSCTL_LOAD_LIST, ...
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator

from ctdoctor.model.kernel import canonical
from ctdoctor.model.persisted import ModprobeDirective, Persisted, SysctlSetting
from ctdoctor.model.textsafe import clean
from ctdoctor.sources.hostroot import HostRoot

CONF_DIRS = ("etc", "run", "usr/local/lib", "usr/lib", "lib")


def config_files(root: HostRoot, subdir: str, suffix: str = ".conf") -> list[str]:
    """Files of a ``<dir>/<subdir>/*.conf`` scheme in effect order (masking applied)."""
    chosen: dict[str, str | None] = {}
    for d in CONF_DIRS:
        rel = f"{d}/{subdir}"
        for name in root.listdir(rel):
            if not name.endswith(suffix) or name in chosen:
                continue
            path = f"{rel}/{name}"
            raw = root.path / path
            try:
                masked = os.path.islink(raw) and os.readlink(raw) == "/dev/null"
            except OSError:
                masked = False
            chosen[name] = None if masked else path
    return [p for n in sorted(chosen) if (p := chosen[n])]


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    buf, start = "", 0
    for n, ln in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        if ln.endswith("\\"):
            buf += ln[:-1] + " "
            continue
        yield start, buf + ln
        buf = ""
    if buf:
        yield start, buf


def parse_sysctl_conf(text: str, file: str) -> list[SysctlSetting]:
    out = []
    for n, ln in enumerate(text.splitlines(), 1):
        s = ln.strip()
        if not s or s[0] in "#;" or "=" not in s:
            continue
        k, _, v = s.partition("=")
        ign = k.startswith("-")
        key = canonical(k.lstrip("-").strip())
        if len(key) > 256 or not key.isprintable():
            continue
        raw = k.lstrip("-").strip().replace("/", ".") if "/" in k and "." not in k else k.lstrip("-").strip()
        out.append(SysctlSetting(key, clean(v, 256), file, n, ign, raw))
    return out


def parse_modprobe_conf(text: str, file: str) -> list[ModprobeDirective]:
    out = []
    for n, ln in _logical_lines(text):
        s = ln.strip()
        if not s or s[0] == "#":
            continue
        parts = s.split(None, 2)
        if len(parts) < 2:
            continue
        verb, mod = parts[0], parts[1].replace("-", "_")
        if verb not in ("options", "install", "remove", "blacklist", "alias", "softdep"):
            continue
        args = " ".join(parts[2].split()) if len(parts) > 2 else ""
        out.append(ModprobeDirective(verb, mod, args, file, n))
    return out


def parse_modules_load(text: str, file: str) -> list[tuple[str, str]]:
    out = []
    for ln in text.splitlines():
        s = ln.strip()
        if s and s[0] not in "#;":
            out.append((s.split()[0].replace("-", "_"), file))
    return out


def parse_shell_vars(text: str) -> dict[str, str]:
    """KEY="value" lines of /etc/sysconfig files."""
    out = {}
    for ln in text.splitlines():
        s = ln.strip()
        if not s or s.startswith("#") or "=" not in s:
            continue
        k, _, v = s.partition("=")
        k = k.strip()
        if not k.isidentifier():
            continue
        try:
            vals = shlex.split(v, comments=True)
        except ValueError:
            vals = [v.strip().strip("\"'")]
        out[k] = vals[0] if vals else ""
    return out


def read_persisted(root: HostRoot) -> Persisted:
    p = Persisted()
    _read_sysctl(root, p)
    _read_modules(root, p)
    _read_udev(root, p)
    for f in ("etc/sysconfig/iptables-config", "etc/sysconfig/ip6tables-config"):
        text = root.read_text(f)
        if text is not None:
            p.iptables_config[root.display(f)] = parse_shell_vars(text)
    return p


def _read_sysctl(root: HostRoot, p: Persisted) -> None:
    files = config_files(root, "sysctl.d")
    seen_real = set()
    for f in files:
        real = root.resolve(f)
        seen_real.add(str(real))
    # /etc/sysctl.conf comes last, unless a sysctl.d entry is a link to it already.
    if root.exists("etc/sysctl.conf") and str(root.resolve("etc/sysctl.conf")) not in seen_real:
        files.append("etc/sysctl.conf")
    for f in files:
        text = root.read_text(f)
        if text is None:
            continue
        p.sysctl_files.append(root.display(f))
        for s in parse_sysctl_conf(text, root.display(f)):
            p.sysctl_all.append(s)
            p.sysctl[s.key] = s


def _read_modules(root: HostRoot, p: Persisted) -> None:
    # /etc/modprobe.conf: the only modprobe config on RHEL 5 (module-init-tools read it first)
    for f in ["etc/modprobe.conf", *config_files(root, "modprobe.d")]:
        text = root.read_text(f)
        if text:
            p.modprobe.extend(parse_modprobe_conf(text, root.display(f)))
    for f in config_files(root, "modules-load.d"):
        text = root.read_text(f)
        if text:
            p.modules_load.extend(parse_modules_load(text, root.display(f)))
    if root.exists("etc/modules"):  # Debian's legacy list
        text = root.read_text("etc/modules") or ""
        p.modules_load.extend(parse_modules_load(text, "/etc/modules"))


def _read_udev(root: HostRoot, p: Persisted) -> None:
    for d in ("etc/udev/rules.d", "run/udev/rules.d", "usr/lib/udev/rules.d", "lib/udev/rules.d"):
        for name in root.listdir(d):
            if not name.endswith(".rules"):
                continue
            text = root.read_text(f"{d}/{name}") or ""
            for n, ln in enumerate(text.splitlines(), 1):
                if "nf_conntrack" in ln and not ln.lstrip().startswith("#"):
                    p.udev_rules.append((root.display(f"{d}/{name}"), n, ln.strip()))
