"""``recover``: load what conntrack and NAT need again, and check that tracking works.

The modules are loaded in order (nf_defrag_ipv4/ipv6, nf_conntrack, nf_conntrack_ipv4/ipv6
before 4.19, nf_nat, the helpers the rules use); a modprobe that says yes without loading
(an ``install M /bin/true`` line) is caught. ``verify`` makes a throwaway netns with a
conntrack rule and sees its loopback connection become an entry.
"""

from __future__ import annotations

import sys
import uuid

from ctdoctor.errors import Failure
from ctdoctor.model import kernel
from ctdoctor.sources import children
from ctdoctor.sources.modules import loaded
from ctdoctor.sources.snapshot import Snapshot

HELPERS = ("ftp", "sip", "tftp", "irc", "h323", "amanda", "pptp", "snmp")


def modules_needed(snap: Snapshot) -> list[str]:
    mods = ["nf_defrag_ipv4", "nf_defrag_ipv6", "nf_conntrack"]
    if kernel.has_per_l3_modules(snap.version):
        mods += ["nf_conntrack_ipv4", "nf_conntrack_ipv6"]
    mods.append("nf_nat")
    rules = snap.namespaces[0].rules if snap.namespaces else None
    if rules:
        text = " ".join(rules.helpers).lower()
        for helper in HELPERS:
            if helper in text:
                mods.append(f"nf_conntrack_{helper}")
    return mods


def _run(argv: list[str], timeout: float = 30) -> children.Done:
    """A helper command; a missing tool or a hang is a Failure with its name, never an internal error."""
    try:
        return children.run(argv, timeout)
    except FileNotFoundError:
        raise Failure(f"{argv[0]} is not installed (needed to verify tracking)") from None
    except TimeoutError as e:
        raise Failure(str(e)) from None
    except OSError as e:
        raise Failure(f"could not run {argv[0]}: {e}") from None


def modprobe(module: str) -> str | None:
    """Load a module; None when it is loaded now, else why not."""
    r = _run(["modprobe", module])
    if r.returncode == 0 and not loaded(module):
        # modprobe ran something else (an install line) and said yes: it is not there
        return "modprobe returned success but the module is not loaded"
    return r.stderr.strip() if r.returncode else None


def verify() -> tuple[bool, str]:
    """Is conntrack tracking? A throwaway netns, a ct rule, one loopback connection, one entry."""
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
        children.run_quiet(["ip", "netns", "del", ns])
