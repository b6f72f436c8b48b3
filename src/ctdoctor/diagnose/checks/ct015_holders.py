"""Who holds nf_conntrack.

What it detects
    The state of the ``nf_conntrack`` module: built in (never unloaded), or
    loaded with its reference count and the modules holding it
    (``/sys/module/nf_conntrack/holders``, ``lsmod``'s "Used by").

Why it matters
    A module with holders cannot be unloaded until they go: ``modprobe -r
    nf_conntrack`` fails while ``nf_nat``, ``xt_conntrack`` or
    ``nf_conntrack_netlink`` hold it, and the iptables service unloads the
    holders first for that reason. This explains why an unload (and the reset
    of settings that comes with the reload) did or did not happen. A built-in
    conntrack never resets by reload.

How to fix
    Nothing to fix by itself; see CT006/CT007 for keeping settings across
    reloads.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import INFO, Context, Finding, Unknown
from ctdoctor.model.modules import ModuleState

CODE = "CT015"
TITLE = "who holds nf_conntrack"


def run(ctx: Context) -> Iterator[Finding | Unknown]:
    m = ctx.snap.modules.get(ctx.tracker_module())
    if m is None or m.state == ModuleState.UNKNOWN:
        yield Unknown(CODE, "not enough data: no module information")
        return
    if m.state == ModuleState.BUILTIN:
        yield Finding(CODE, INFO, TITLE,
                      summary="nf_conntrack is built into the kernel: it is never unloaded or reloaded",
                      evidence={"state": m.state, "source": m.source},
                      explanation="Settings cannot be reset by a module reload here; drift (CT006) would come "
                                  "from something writing the sysctls.")
    elif m.state == ModuleState.LOADED:
        holders = m.holders
        yield Finding(CODE, INFO, TITLE,
                      summary=f"{m.name} is a loaded module, reference count {m.refcount}, held by "
                              f"{', '.join(holders) if holders else 'no module'}",
                      evidence={"state": m.state, "refcount": m.refcount, "holders": holders, "source": m.source},
                      explanation=("It cannot be unloaded while these modules hold it; unloading them first (as "
                                   "the iptables service does) and then nf_conntrack resets every net.netfilter "
                                   "setting to its default on the next load." if holders or m.refcount else
                                   "Nothing holds it: `modprobe -r nf_conntrack` would unload it and lose its "
                                   "settings."))
    elif m.state == ModuleState.PRESENT:
        yield Finding(CODE, INFO, TITLE,
                      summary="nf_conntrack is in the kernel (its sysctls exist); no module list says whether it is "
                              "a loaded module or built in",
                      evidence={"state": m.state, "source": m.source},
                      explanation="Without lsmod or /proc/modules the holders and reference count are unknown.")
    elif m.state == ModuleState.ABSENT:
        yield Finding(CODE, INFO, TITLE, summary="nf_conntrack is not loaded",
                      evidence={"state": m.state, "source": m.source},
                      explanation="No connection tracking right now: state and NAT rules cannot work (CT005).",
                      fix=["ctdoctor recover"])
