"""ctdoctor apply: persist and apply settings; a dry run with a diff unless --yes."""

from __future__ import annotations

import re
import sys

from ctdoctor.commands.common import Needs, bounded, open_root
from ctdoctor.errors import UsageError

TIMEOUT_RE = re.compile(r"^(?:nf_conntrack_)?([a-z0-9_]+)=(\d+)$")
INT_MAX = 2**31 - 1  # the sysctls are C ints
MIN_MAX = 1024  # below this a table is useless; 0 (unlimited) is never written
MIN_BUCKETS = 16


def add_arguments(p) -> None:
    p.add_argument("--max", type=bounded(int, MIN_MAX, INT_MAX), metavar="N",
                   help=f"nf_conntrack_max ({MIN_MAX}..{INT_MAX}, and at least the current count)")
    p.add_argument("--buckets", type=bounded(int, MIN_BUCKETS, 1 << 30), metavar="N",
                   help="hash buckets (nf_conntrack_buckets / hashsize=)")
    p.add_argument("--timeout", action="append", default=[], metavar="NAME=SECONDS",
                   help="e.g. tcp_timeout_established=86400 (repeatable)")
    p.add_argument("--from-plan", nargs="?", const="", default=None, metavar="PLAN.json",
                   help="use what `ctdoctor plan` picks: exactly the numbers of a saved plan (`ctdoctor plan "
                        "--format json > PLAN.json`), else a plan made now the same way (every netns, a 1 s sample)")
    p.add_argument("--yes", action="store_true", help="write the files and apply live (default: show the diff)")


def _plan_now(root) -> dict:
    """The plan `ctdoctor plan` would print now: every netns, the same sample."""
    from ctdoctor.diagnose import plan
    from ctdoctor.diagnose.facts import context
    from ctdoctor.sources import snapshot

    snap = snapshot.build(root, "all", interval=1.0 if root.is_live else None, with_rules=False, with_log=False)
    return plan.make_plan(context(snap, root, live=root.is_live))


def _saved_plan(path: str) -> dict:
    """A plan `ctdoctor plan --format json` wrote: its pick and timeouts, checked."""
    import json

    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(1 << 20))
    except OSError as e:
        raise UsageError(f"--from-plan {path}: {e.strerror}") from None
    except ValueError:
        raise UsageError(f"--from-plan {path}: not JSON (save it with `ctdoctor plan --format json`)") from None
    try:
        pick = doc["pick"]
        ok = (isinstance(pick["max"], int) and isinstance(pick["buckets"], int)
              and all(isinstance(t["name"], str) and isinstance(t["suggested"], int) for t in doc["timeouts"]))
    except (KeyError, TypeError):
        ok = False
    if not ok or doc.get("schema") != 1:
        raise UsageError(f"--from-plan {path}: not a plan (save it with `ctdoctor plan --format json`)")
    return doc


def compute(args, root):
    """(file changes, live settings to apply, module_builtin)."""
    from ctdoctor.model.kernel import NF
    from ctdoctor.sources import snapshot
    from ctdoctor.write import persist

    max_, buckets = args.max, args.buckets
    timeouts: dict[str, int] = {}
    for t in args.timeout:
        m = TIMEOUT_RE.match(t.strip())
        if not m:
            raise UsageError(f"--timeout {t}: use NAME=SECONDS, e.g. tcp_timeout_established=86400")
        name = "nf_conntrack_" + m.group(1)
        if "timeout" not in name:
            raise UsageError(f"--timeout {t}: {name} is not a timeout")
        secs = int(m.group(2)) if len(m.group(2)) < 12 else INT_MAX + 1
        if not 1 <= secs <= INT_MAX:
            raise UsageError(f"--timeout {t}: seconds must be 1..{INT_MAX}")
        timeouts[name] = secs
    snap = snapshot.build(root, None, interval=None, with_rules=False, with_log=False)
    for name in timeouts:
        if snap.settings and NF + name not in snap.settings:
            raise UsageError(f"--timeout: this kernel has no net.netfilter.{name}")
    if args.from_plan is not None:
        p = _saved_plan(args.from_plan) if args.from_plan else _plan_now(root)
        max_ = max_ or p["pick"]["max"]
        buckets = buckets or p["pick"]["buckets"]
        for t in p["timeouts"]:
            timeouts.setdefault(t["name"], t["suggested"])
    counts = [st.count for st in snap.namespaces if st.count is not None]
    if max_ is not None and counts and max_ < max(counts):
        raise UsageError(f"--max {max_} is below the {max(counts)} entries the table holds now: "
                         "new connections would fail at once")
    # no values given: keep the persisted ones, and install what loads conntrack early and re-applies them
    # after a module reload (modules-load.d, the udev rule, IPTABLES_SYSCTL_LOAD_LIST): what CT006, CT007 and
    # CT008 ask for; when those are in place too, it says there is nothing to change
    builtin = snap.modules.get("nf_conntrack") is not None and snap.modules["nf_conntrack"].state == "builtin"
    changes = persist.compute(root, max_=max_, buckets=buckets, timeouts=timeouts, module_builtin=builtin)
    wanted = persist.desired_settings(root, max_, buckets, timeouts)
    live = []
    for k, v in sorted(wanted.items()):
        cur = snap.settings.get(k)
        if cur is not None and cur.strip() != v:
            live.append((k, cur.strip(), v))
    return changes, live, builtin


def overrides(root, changes) -> list[str]:
    """Lines of files that systemd-sysctl / ``sysctl --system`` read after 90-ctdoctor.conf and
    that set one of its keys to another value: at boot they win."""
    from ctdoctor.sources.persisted import parse_sysctl_conf, read_persisted
    from ctdoctor.write.persist import SYSCTL_FILE

    ours = next((c for c in changes if c.path == SYSCTL_FILE), None)
    if ours is None:
        return []
    wanted = {s.key: s.value for s in parse_sysctl_conf(ours.new, SYSCTL_FILE)}
    p = read_persisted(root)
    files = p.sysctl_files
    if SYSCTL_FILE in files:
        later = set(files[files.index(SYSCTL_FILE) + 1:])
    else:  # not written yet: where it would sort among the sysctl.d files (sysctl.conf is always last)
        later = {f for f in files if f.rsplit("/", 1)[-1] > "90-ctdoctor.conf" or f == "/etc/sysctl.conf"}
    out = []
    for s in p.sysctl_all:
        if s.file in later and s.key in wanted and " ".join(s.value.split()) != wanted[s.key]:
            out.append(f"{s.file}:{s.lineno} sets {s.key} = {s.value} and is read after {SYSCTL_FILE}: "
                       f"at boot it wins (remove that line, or set it to {wanted[s.key]})")
    return out


def requires(args) -> Needs:
    return Needs(root=True, what="apply --yes", why="to write /etc and sysctls") if args.yes else Needs()

def run(args) -> int:
    from ctdoctor.commands.common import check_format

    check_format(args, ("text",))  # --format is refused where it does not apply, never ignored
    from ctdoctor.write.files import diff, write, write_sysctl

    root = open_root(args)
    if root.kind == "sosreport" and args.yes:
        raise UsageError("apply --yes never writes into a sosreport (it is evidence): run without --yes for the "
                         "diff to apply on that host")
    if not root.is_live and not root.path.is_dir():
        raise UsageError("apply --root needs a directory")
    changes, live, _ = compute(args, root)
    d = diff(changes)
    where = "" if root.is_live else f" (in {root.label})"
    warns = overrides(root, changes)
    for w in warns:
        print(f"warning: {w}")
    if not d and not live:
        print(f"nothing to change{where}: files and live values already match"
              + ("; but see the warning above: another file overrides them at boot" if warns else ""))
        return 1 if warns else 0
    if root.kind == "sosreport":
        live = []  # a sosreport's host is not this one: only the files to write there
        where = f" (for the host of {root.label}: apply this diff there)"
    if d:
        sys.stdout.write(d)
    for k, cur, v in live:
        print(f"live: sysctl -w {k}={v}   # now {cur}")
    if not args.yes:
        print(f"dry run{where}: nothing written. Run again with --yes to write these files and apply the values.")
        return 0
    written = write(root, changes)
    from ctdoctor.errors import Failure

    for k, _, v in live:
        try:
            write_sysctl(root, k, v)
        except Failure:
            if not k.endswith("nf_conntrack_buckets"):
                raise
            # Older kernels: the sysctl is read-only, the module parameter resizes the hash.
            param = root.path / "sys/module/nf_conntrack/parameters/hashsize"
            try:
                param.write_text(f"{v}\n")
            except OSError as e:
                raise Failure(f"cannot resize the hash to {v}: nf_conntrack_buckets is read-only and {param}: {e}") from None
    print(f"wrote {len(written)} file(s){where}" + (": " + ", ".join(written) if written else "")
          + f"; applied {len(live)} live value(s)")
    return 1 if warns else 0
