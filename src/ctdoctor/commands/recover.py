"""ctdoctor recover: bring conntrack and NAT back after the modules were unloaded.

Loads what this kernel needs, in order (nf_defrag_ipv4/ipv6, nf_conntrack,
nf_conntrack_ipv4/ipv6 before 4.19, nf_nat, the helpers the rules use),
re-applies the persisted net.netfilter sysctls, then verifies that tracking
works: a throwaway netns with a conntrack rule sees its loopback connection
become an entry. On a kernel with conntrack built in there is nothing to load;
it still re-applies and verifies.
"""

from __future__ import annotations

import subprocess
import sys

from ctdoctor.commands.common import Needs, open_root
from ctdoctor.errors import Failure, UsageError


def add_arguments(p) -> None:
    p.add_argument("--dry-run", action="store_true", help="show what would be loaded and applied")


def modules_needed(snap) -> list[str]:
    from ctdoctor.model import kernel

    mods = ["nf_defrag_ipv4", "nf_defrag_ipv6", "nf_conntrack"]
    if kernel.has_per_l3_modules(snap.version):
        mods += ["nf_conntrack_ipv4", "nf_conntrack_ipv6"]
    mods.append("nf_nat")
    rules = snap.namespaces[0].rules if snap.namespaces else None
    if rules:
        text = " ".join(rules.helpers).lower()
        for helper in ("ftp", "sip", "tftp", "irc", "h323", "amanda", "pptp", "snmp"):
            if helper in text:
                mods.append(f"nf_conntrack_{helper}")
    return mods


def plan(root, snap) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """([(module, state)], [(key, live, persisted)]): what to load and which values to re-apply."""
    from ctdoctor.diagnose.status import settings_report

    load = []
    for m in modules_needed(snap):
        info = snap.modules.get(m)
        st = info.state if info else "unknown"
        load.append((m, st))
    reapply = [(d["key"], d["live"], d["persisted"]) for d in settings_report(snap)["drift"]]
    return load, reapply


def traps(snap, modules: list[str]) -> list[tuple[str, str]]:
    """(module, why) for each modprobe.d line that would stop one of these modules from loading: an
    ``install M /bin/true`` (modprobe runs that instead, and reports success) or a ``blacklist M``;
    with the sed command that disables it."""
    from ctdoctor.diagnose.checks.ct008_modprobe_install import NOOP

    out = []
    for d in snap.persisted.modprobe:
        if d.module not in modules:
            continue
        if (d.verb == "install" and NOOP.search(d.args)) or d.verb == "blacklist":
            line = f"{d.verb} {d.module}" + (f" {d.args}" if d.args else "")
            out.append((d.module, (f"{d.file}:{d.lineno}: {line}; disable it first: "
                                  f"sed -i '{d.lineno}s/^/# disabled by ctdoctor advice: /' {d.file}")))
    return out


def loaded(module: str) -> bool:
    """The module is in the running kernel now (/sys/module/M/initstate says live)."""
    try:
        with open(f"/sys/module/{module}/initstate") as f:
            return f.read().strip() == "live"
    except OSError:
        return False


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    """A helper command; a missing tool or a hang is a Failure with its name, never an internal error."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise Failure(f"{argv[0]} is not installed (needed to verify tracking)") from None
    except subprocess.TimeoutExpired:
        raise Failure(f"{' '.join(argv[:4])} did not finish within {timeout:g} s") from None
    except OSError as e:
        raise Failure(f"could not run {argv[0]}: {e}") from None


def verify() -> tuple[bool, str]:
    """Is conntrack tracking? A throwaway netns, a ct rule, one loopback connection, one entry."""
    import uuid

    ns = f"ctdlab-verify-{uuid.uuid4().hex[:4]}"
    try:
        r = _run(["ip", "netns", "add", ns])
        if r.returncode:
            return False, "could not create a test netns: " + r.stderr.strip()
        ex = ["ip", "netns", "exec", ns]
        r = _run([*ex, "ip", "link", "set", "lo", "up"])
        if r.returncode:
            return False, "could not bring up lo in the test netns: " + r.stderr.strip()
        rule = ("add table inet v; add chain inet v o { type filter hook output priority 0; };"
                " add rule inet v o ct state new accept")
        r = _run([*ex, "nft", rule])
        if r.returncode:
            return False, "nft could not add a conntrack rule: " + r.stderr.strip()
        code = ("import socket;s=socket.socket();s.bind(('127.0.0.1',0));s.listen();"
                "c=socket.create_connection(s.getsockname());a,_=s.accept();"
                "print(open('/proc/sys/net/netfilter/nf_conntrack_count').read().strip())")
        r = _run([*ex, sys.executable, "-c", code], timeout=20)
        if r.returncode or not r.stdout.strip().isdigit():
            return False, "test connection failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
        n = int(r.stdout.strip())
        return (n >= 1, f"a loopback connection in a test netns became {n} conntrack entr{'y' if n == 1 else 'ies'}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def requires(args) -> Needs:
    # --dry-run shows the plan, also for a host image; the real thing loads modules and writes sysctls
    return Needs() if args.dry_run else Needs(root=True, what="recover", why="to load modules and write sysctls")

def run(args) -> int:
    from ctdoctor.commands.common import check_format

    check_format(args, ("text",))  # --format is refused where it does not apply, never ignored
    from ctdoctor.sources import snapshot
    from ctdoctor.write.files import write_sysctl

    root = open_root(args)
    snap = snapshot.build(root, None, interval=None, with_log=False)
    load, reapply = plan(root, snap)
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
        print(f"sysctl {k}: {live} -> {want} (persisted)")
    # a modprobe.d trap makes modprobe "succeed" without loading: found before anything is loaded
    needed = [m for m, _st in load] if snap.module_support is not False else []
    for m, why in traps(snap, needed):
        print(f"trap for {m}: {why}" + ("" if m in to_load else " (loaded now; it bites at the next load)"))
    trapped = traps(snap, to_load)
    if args.dry_run or not root.is_live:
        if not root.is_live and not args.dry_run:
            raise UsageError("recover needs the running kernel; with --root use --dry-run to see the plan")
        print("dry run: nothing loaded or written")
        return 0
    import shutil

    if trapped:
        raise Failure(f"not loading: {trapped[0][1]}" + (f" (and {len(trapped) - 1} more, listed above)"
                                                         if len(trapped) > 1 else ""))
    if to_load and shutil.which("modprobe") is None:
        raise Failure("modprobe is not installed (package kmod): cannot load " + ", ".join(to_load))
    for m in to_load:
        r = _run(["modprobe", m])
        if r.returncode == 0 and not loaded(m):
            # modprobe ran something else (an install line) and said yes: it is not there
            r = subprocess.CompletedProcess(r.args, 1, "", "modprobe returned success but the module is not loaded")
        if r.returncode:
            msg = r.stderr.strip()
            if m in ("nf_conntrack", "nf_nat"):
                raise Failure(f"modprobe {m} failed: {msg} (see CT008: an 'install {m} /bin/true' line?)")
            print(f"modprobe {m} failed (optional): {msg}")
        else:
            print(f"loaded {m}")
    if to_load:  # the module came back with defaults: re-read what drifted
        snap = snapshot.build(root, None, interval=None, with_log=False)
        _, reapply = plan(root, snap)
    for k, _live, want in reapply:
        write_sysctl(root, k, want)
        print(f"applied {k} = {want}")
    ok, how = verify()
    print(("verified: " if ok else "NOT working: ") + how)
    return 0 if ok else 1
