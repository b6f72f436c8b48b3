"""Kernel modules: ``/proc/modules``, ``lsmod`` and ``/sys/module/<name>``.

A module can be *builtin* (``/sys/module/X`` exists, no ``refcnt`` file, not
in /proc/modules), *loaded* (listed in /proc/modules / lsmod), or *absent*.
``/proc/modules`` lines are ``name size refcount holders, state address``
(``print_unload_info`` prints ``-`` when there are no holders).
"""

from __future__ import annotations

from ctdoctor.model.modules import (  # noqa: F401 - the types live in model
    ABSENT,
    BUILTIN,
    CONNTRACK_MODULES,
    LOADED,
    PRESENT,
    UNKNOWN,
    ModuleInfo,
    ModuleState,
)


def parse_proc_modules(text: str) -> dict[str, ModuleInfo]:
    out = {}
    for ln in text.splitlines():
        p = ln.split()
        if len(p) < 3 or not p[1].isdigit():
            continue
        holders = [] if len(p) < 4 or p[3] == "-" else [h for h in p[3].split(",") if h]
        out[p[0]] = ModuleInfo(p[0], LOADED, int(p[2]) if p[2].lstrip("-").isdigit() else None, holders,
                               source="/proc/modules")
    return out


def parse_lsmod(text: str, source: str = "lsmod") -> dict[str, ModuleInfo]:
    """``Module Size Used by`` table: ``name size count [holder,holder]``."""
    out = {}
    for ln in text.splitlines():
        p = ln.split()
        if len(p) < 3 or p[0] == "Module" or not p[1].isdigit() or not p[2].lstrip("-").isdigit():
            continue
        holders = [h for h in p[3].split(",") if h] if len(p) > 3 else []
        out[p[0]] = ModuleInfo(p[0], LOADED, int(p[2]), holders, source=source)
    return out


def loaded(module: str) -> bool:
    """The module is in the running kernel now (/sys/module/M/initstate says live)."""
    try:
        with open(f"/sys/module/{module}/initstate") as f:
            return f.read().strip() == "live"
    except OSError:
        return False
