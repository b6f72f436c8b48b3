"""Configuration that survives a reboot or a module reload, as data (read by ``sources.persisted``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SysctlSetting:
    key: str
    value: str
    file: str
    lineno: int
    ignore_errors: bool = False
    raw_key: str = ""  # as written (``net.ipv4.netfilter.ip_conntrack_max``); ``key`` is the modern name


@dataclass
class ModprobeDirective:
    verb: str  # options | install | remove | blacklist | alias | softdep
    module: str
    args: str
    file: str
    lineno: int


@dataclass
class Persisted:
    """What the host's configuration sets. ``no_effect``: settings whose key this kernel does not
    have (an ``ip_conntrack_*`` name kept from a 2.6 host on a 5.x kernel): sysctl skips them, so
    they are left out of ``sysctl`` and reported on their own (CT020), never as drift."""

    sysctl_files: list[str] = field(default_factory=list)  # in the order applied
    sysctl: dict[str, SysctlSetting] = field(default_factory=dict)  # effective, canonical key
    sysctl_all: list[SysctlSetting] = field(default_factory=list)  # every assignment, in order
    modprobe: list[ModprobeDirective] = field(default_factory=list)
    modules_load: list[tuple[str, str]] = field(default_factory=list)  # (module, file)
    udev_rules: list[tuple[str, int, str]] = field(default_factory=list)  # (file, lineno, line)
    iptables_config: dict[str, dict[str, str]] = field(default_factory=dict)  # file -> {KEY: value}
    no_effect: list[SysctlSetting] = field(default_factory=list)

    def drop_keys_the_kernel_lacks(self, has_key: Callable[[str], bool | None]) -> None:
        """Move settings whose raw key the running kernel lacks (``has_key(raw) is False``) to
        ``no_effect`` and recompute the effective values without them."""
        keep, self.no_effect = [], []
        for s in self.sysctl_all:
            if s.raw_key and s.raw_key != s.key and has_key(s.raw_key) is False:
                self.no_effect.append(s)
            else:
                keep.append(s)
        self.sysctl = {}
        for s in keep:
            self.sysctl[s.key] = s
