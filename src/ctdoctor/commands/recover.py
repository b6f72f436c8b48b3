"""ctdoctor recover: bring conntrack and NAT back after the modules were unloaded.

Loads what this kernel needs, in order (nf_defrag_ipv4/ipv6, nf_conntrack,
nf_conntrack_ipv4/ipv6 before 4.19, nf_nat, the helpers the rules use),
re-applies the persisted net.netfilter sysctls, then verifies that tracking
works: a throwaway netns with a conntrack rule sees its loopback connection
become an entry. On a kernel with conntrack built in there is nothing to load;
it still re-applies and verifies.
"""

from __future__ import annotations

import argparse
import shutil

from ctdoctor.commands.common import Needs, check_format, open_root
from ctdoctor.diagnose.checks.ct008_modprobe_install import NOOP
from ctdoctor.diagnose.status import settings_report
from ctdoctor.errors import Failure, UsageError
from ctdoctor.render.page import terminal_width
from ctdoctor.render.wrap import command, prose
from ctdoctor.sources import snapshot
from ctdoctor.sources.hostroot import HostRoot
from ctdoctor.sources.snapshot import Snapshot
from ctdoctor.write import files
from ctdoctor.write import recover as recovery


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="show what would be loaded and applied")


def plan(root: HostRoot, snap: Snapshot) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """([(module, state)], [(key, live, persisted)]): what to load and which values to re-apply."""
    load = []
    for m in recovery.modules_needed(snap):
        info = snap.modules.get(m)
        st = info.state if info else "unknown"
        load.append((m, st))
    reapply = [(d["key"], d["live"], d["persisted"]) for d in settings_report(snap)["drift"]]
    return load, reapply


def traps(snap: Snapshot, modules: list[str]) -> list[tuple[str, str, str]]:
    """(module, where, fix) for each modprobe.d line that would stop one of these modules from loading: an
    ``install M /bin/true`` (modprobe runs that instead, and reports success) or a ``blacklist M``;
    with the sed command that disables it."""
    out = []
    for d in snap.persisted.modprobe:
        if d.module not in modules:
            continue
        if (d.verb == "install" and NOOP.search(d.args)) or d.verb == "blacklist":
            line = f"{d.verb} {d.module}" + (f" {d.args}" if d.args else "")
            out.append((d.module, f"{d.file}:{d.lineno}: {line}",
                        f"sed -i '{d.lineno}s/^/# disabled by ctdoctor advice: /' {d.file}"))
    return out


def requires(args: argparse.Namespace) -> Needs:
    # --dry-run shows the plan, also for a host image; the real thing loads modules and writes sysctls
    return Needs() if args.dry_run else Needs(root=True, what="recover", why="to load modules and write sysctls")

def run(args: argparse.Namespace) -> int:
    check_format(args, ("text",))  # --format is refused where it does not apply, never ignored
    root = open_root(args)
    snap = snapshot.build(root, None, interval=None, with_log=False)
    load, reapply = plan(root, snap)
    width = terminal_width()
    if snap.module_support is False:
        print("this kernel cannot load modules (no /proc/modules): conntrack is built in, nothing to load")
        to_load = []
    else:
        to_load = [m for m, st in load if st not in ("loaded", "builtin", "present")]
        if not to_load and any(m == "nf_conntrack" and st == "builtin" for m, st in load):
            print("nf_conntrack is built into this kernel: nothing to load")
        for m, st in load:
            print(f"module {m}: {st}" + (" -> modprobe " + m if m in to_load else ""))
    for k, live, want in reapply:
        _say(f"sysctl {k}: {live} -> {want} (persisted)", width)
    # a modprobe.d trap makes modprobe "succeed" without loading: found before anything is loaded
    needed = [m for m, _st in load] if snap.module_support is not False else []
    for m, where, fix in traps(snap, needed):
        _trap(m, where, fix, "" if m in to_load else " (loaded now; it bites at the next load)", width)
    trapped = traps(snap, to_load)
    if args.dry_run or not root.is_live:
        if not root.is_live and not args.dry_run:
            raise UsageError("recover needs the running kernel; with --root use --dry-run to see the plan")
        print("dry run: nothing loaded or written")
        return 0
    if trapped:
        raise Failure(f"not loading: {trapped[0][1]}; disable it first: {trapped[0][2]}" + (f" (and {len(trapped) - 1} more, listed above)"
                                                         if len(trapped) > 1 else ""))
    if to_load and shutil.which("modprobe") is None:
        raise Failure("modprobe is not installed (package kmod): cannot load " + ", ".join(to_load))
    for m in to_load:
        msg = recovery.modprobe(m)
        if msg is not None:
            if m in ("nf_conntrack", "nf_nat"):
                raise Failure(f"modprobe {m} failed: {msg} (see CT008: an 'install {m} /bin/true' line?)")
            _say(f"modprobe {m} failed (optional): {msg}", width)
        else:
            print(f"loaded {m}")
    if to_load:  # the module came back with defaults: re-read what drifted
        snap = snapshot.build(root, None, interval=None, with_log=False)
        _, reapply = plan(root, snap)
    for k, _live, want in reapply:
        files.write_sysctl(root, k, want)
        _say(f"applied {k} = {want}", width)
    ok, how = recovery.verify()
    _say(("verified: " if ok else "NOT working: ") + how, width)
    return 0 if ok else 1


def _trap(module: str, where: str, fix: str, late: str, width: int) -> None:
    """One line when it fits; else the sentence wrapped and the command on lines of its own, broken
    between words with \\ continuations (never wrapped by the terminal)."""
    one = f"trap for {module}: {where}; disable it first: {fix}{late}"
    if len(one) <= width:
        print(one)
        return
    _say(f"trap for {module}: {where}{late}; disable it first:", width)
    print("\n".join(command(fix, width, "  $ ")))


def _say(text: str, width: int) -> None:
    """A sentence wrapped between words at the terminal's width, its next lines indented."""
    print("\n".join(prose(text, width, "", "  ")))
