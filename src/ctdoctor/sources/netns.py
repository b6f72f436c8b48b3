"""Network namespaces on the live host: find them, name them, read inside them.

``nf_conntrack_max`` is global but every netns has its own count, stats and
table, and ``/proc/net/nf_conntrack`` lists only the reader's netns. We find
namespaces from ``/run/netns/*`` (ip-netns names) and ``/proc/*/ns/net``
(processes, containers), and read a netns's files from a forked child that
has ``setns()``-ed into it: ``/proc/self/net`` and ``/proc/sys/net`` follow
the reading task's netns.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import io
import os
import pickle
import re
import resource
import socket
import sys
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

from ctdoctor.errors import Failure, InputError, did_you_mean

CLONE_NEWNET = 0x40000000
INIT = "init"


class NetnsRef(NamedTuple):
    """A netns found on the host (a NamedTuple: no dataclasses import before the first read)."""

    name: str
    inode: int
    path: str  # a file whose open fd can be passed to setns()
    owner: str = ""  # "ip netns", or "pid 1234 (comm)"
    is_init: bool = False
    origin: str = ""  # where it was found, when ``path`` is a descriptor held open by ``pin``
    pids: tuple[int, ...] = ()  # some processes in it (up to 8): who holds it (a pod's containers)


def _inode_of(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _self_inode() -> int | None:
    return _inode_of("/proc/self/ns/net")


def _init_ref(proc: str = "/proc") -> NetnsRef | None:
    """The initial netns: pid 1's; our own where pid 1's cannot be seen (a sandbox that hides it)."""
    ino = _inode_of(f"{proc}/1/ns/net") or _self_inode()
    return None if ino is None else NetnsRef(INIT, ino, f"{proc}/1/ns/net", "pid 1", True)


def discover(proc: str = "/proc", run_netns: str = "/run/netns") -> list[NetnsRef]:
    """Every netns on the host: init first, then ip-netns names, then process-owned ones."""
    found: dict[int, NetnsRef] = {}
    init = _init_ref(proc)
    if init is not None:
        found[init.inode] = init
    try:
        names = sorted(os.listdir(run_netns))
    except OSError as e:
        _unless_starved(e)
        names = []
    try:
        nsfs: int | None = os.stat(f"{proc}/self/ns/net").st_dev
    except OSError:
        nsfs = None
    for name in names:
        p = f"{run_netns}/{name}"
        try:
            st = os.stat(p)
        except OSError:
            continue
        if nsfs is not None and st.st_dev != nsfs:
            continue  # a name being added or deleted: a plain file for a moment, before its mount or after
        if st.st_ino not in found:
            found[st.st_ino] = NetnsRef(name, st.st_ino, p, "ip netns")
    try:
        pids = sorted(int(d) for d in os.listdir(proc) if d.isdigit())
    except OSError as e:
        _unless_starved(e)
        pids = []
    holders: dict[int, list[int]] = {}
    for pid in pids:
        p = f"{proc}/{pid}/ns/net"
        try:
            link = os.readlink(p)
        except OSError:
            continue
        m = re.match(r"net:\[(\d+)\]", link)
        if not m:
            continue
        ino = int(m.group(1))
        held = holders.setdefault(ino, [])
        if len(held) < 8:
            held.append(pid)
        if ino in found:
            continue
        comm = _read(f"{proc}/{pid}/comm").strip() or "?"
        cid = _container_id(_read(f"{proc}/{pid}/cgroup"))
        label = f"{comm}:{pid}" + (f" container {cid}" if cid else "")
        found[ino] = NetnsRef(f"pid:{pid}", ino, p, label)
    return [r._replace(pids=tuple(holders.get(r.inode, ()))) if not r.is_init else r for r in found.values()]


STARVED = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN)


def _unless_starved(e: OSError) -> None:
    """Raise e when the process ran out of fds or memory: "found nothing" would be a lie then (an
    exporter would drop every netns's series); a missing directory is only nothing found."""
    if e.errno in STARVED:
        raise e


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _container_id(cgroup: str) -> str:
    m = re.search(r"([0-9a-f]{64})", cgroup)
    return m.group(1)[:12] if m else ""


def named_ref(wanted: str | None, run_netns: str = "/run/netns") -> NetnsRef | None:
    """The netns ``--netns`` names when it is init or an ``ip netns`` name, found without
    discovering every process's netns (as ``select(discover(), wanted)`` would, for any form);
    None for the other forms (``all``, ``pid:N``, an inode) or when it is not there."""
    if not wanted or wanted == INIT:
        return _init_ref()
    if "/" in wanted or wanted in (".", "..", "all") or wanted.startswith(("pid:", "pod:")) or \
            any(c in wanted for c in ",*?["):
        return None
    path = f"{run_netns}/{wanted}"
    inode = _inode_of(path)
    return None if inode is None else NetnsRef(wanted, inode, path, "ip netns")


def matches(token: str, name: str, inode: int | None, pod: str = "", is_init: bool = False) -> bool:
    """Does one ``--netns`` word name this netns? ``init``, a name, an inode, ``pod:NAMESPACE/NAME``
    (or ``pod:NAME``), and globs (``cni-*``, ``pod:kube-system/*``) over names and pods."""
    if token == INIT:
        return is_init
    if token.startswith("pod:"):
        pat = token[4:]
        if not pod:
            return False
        return fnmatch.fnmatchcase(pod, pat) or ("/" not in pat and fnmatch.fnmatchcase(pod.split("/", 1)[-1], pat))
    if any(c in token for c in "*?["):
        return fnmatch.fnmatchcase(name, token) or bool(pod and fnmatch.fnmatchcase(pod, token))
    return token in (name, str(inode))


def select(refs: list[NetnsRef], wanted: str | None, pods: dict[int, str] | None = None) -> list[NetnsRef]:
    """``--netns``: None -> init only; ``all``; comma-separated words, each a name, ``pid:N``, an inode,
    ``pod:NAMESPACE/NAME`` or a glob (``pods``: inode -> ``namespace/pod`` of the namespaces that have one)."""
    if not wanted or wanted == INIT:
        return [r for r in refs if r.is_init] or refs[:1]
    tokens = [t.strip() for t in wanted.split(",") if t.strip()]
    if not tokens:
        raise InputError("--netns: no namespace named")
    if "all" in tokens:
        return refs
    pods = pods or {}
    chosen: list[NetnsRef] = []
    for t in tokens:
        hit = [r for r in refs if matches(t, r.name, r.inode, pods.get(r.inode, ""), r.is_init)]
        if not hit and t.startswith("pid:") and t[4:].isdigit():
            ino = _inode_of(f"/proc/{t[4:]}/ns/net")
            hit = [r for r in refs if ino is not None and r.inode == ino]
        if not hit:
            near = did_you_mean(t, [r.name for r in refs] + [f"pod:{p}" for p in pods.values()])
            if near is not None:
                raise InputError(f"no netns {t!r}; did you mean {near!r}?")
            known = ", ".join([r.name for r in refs][:12] + [f"pod:{p}" for p in list(pods.values())[:6]])
            raise InputError(f"--netns {t}: no such network namespace (known: {known})")
        chosen.extend(r for r in hit if r not in chosen)
    return chosen


# ---- entering a netns ------------------------------------------------------------

T = TypeVar("T")
_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL:
    """libc through ctypes, loaded once in the process that forks: each child that enters a
    netns then has it (importing ctypes there cost every fork 5 ms)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def setns(path: str) -> None:
    libc = _load_libc()
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def gone(ref: NetnsRef) -> bool:
    """The netns went away since it was found (a pod deleted, ip netns del): its path no longer names it."""
    if ref.is_init:
        return False
    try:
        return os.stat(ref.origin or ref.path).st_ino != ref.inode
    except OSError:
        return True


_PINNED: list[int] = []


def pin(refs: list[NetnsRef]) -> tuple[list[NetnsRef], list[str]]:
    """Hold every netns open for the rest of the command: (refs whose ``path`` is the held descriptor,
    names of those already gone). A pod deleted while we read it then stays readable to the end of
    the command instead of failing one read in the middle; ``gone()`` still tells, from where it was
    found, that it went away (the command leaves it out with a note). The descriptors close with
    the process (O_CLOEXEC: no tool we run inherits them)."""
    _raise_fd_limit(len(refs) + 64)
    out, vanished = [], []
    for r in refs:
        if r.is_init or r.origin:
            out.append(r)
            continue
        try:
            fd = os.open(r.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            vanished.append(r.name)
            continue
        if os.fstat(fd).st_ino != r.inode:  # the name now holds another netns
            os.close(fd)
            vanished.append(r.name)
            continue
        _PINNED.append(fd)
        out.append(r._replace(path=f"/proc/self/fd/{fd}", origin=r.path))
    return out, vanished


def _raise_fd_limit(want: int) -> None:
    """Hundreds of namespaces held open: raise the soft open-file limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = len(_PINNED) + want
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            pass


def is_current(ref: NetnsRef) -> bool:
    """The calling thread is in this netns (threads may be elsewhere for a moment: run_in_thread)."""
    return (_thread_inode() or _self_inode()) == ref.inode


def run_in_thread(ref: NetnsRef, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` with this thread inside the netns, then bring the thread back: no fork.

    ``setns(CLONE_NEWNET)`` moves only the calling thread; files it opens under
    ``/proc/thread-self/net`` and ``/proc/sys/net`` are that netns's (``/proc/net`` follows the
    process's main thread, so ``fn`` must use ``/proc/thread-self/net``). If the thread cannot come
    back to its own netns, nothing more is read on it: the process stops with an error rather than
    read one netns's files as another's."""
    if is_current(ref):
        return fn(*args)
    libc = _load_libc()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        home_ino = os.fstat(home).st_ino
        try:
            setns(ref.path)
        except FileNotFoundError as e:
            raise Failure(f"reading inside netns {ref.name} failed: {e}") from None
        except OSError as e:
            if e.errno in (1, 13):
                raise Failure(f"entering netns {ref.name} needs root (CAP_SYS_ADMIN): {e}") from None
            if e.errno in STARVED:
                raise  # out of fds or memory: the caller may try again later, so it keeps its errno
            raise Failure(f"reading inside netns {ref.name} failed: {e}") from None
        try:
            return fn(*args)
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0 or _thread_inode() != home_ino:
                print("ctdoctor: internal error: a thread could not return to its own network namespace",
                      file=sys.stderr)
                os._exit(70)
    finally:
        os.close(home)


def _thread_inode() -> int | None:
    return _inode_of("/proc/thread-self/ns/net")


def call_in(ref: NetnsRef, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` inside the netns (in a forked child) and return its result."""
    if is_current(ref):
        return fn(*args)
    _load_libc()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            setns(ref.path)
            payload: tuple[bool, object] = (True, fn(*args))
        except BaseException as e:
            payload = (False, f"{type(e).__name__}: {e}")
        try:
            data = pickle.dumps(payload)
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise Failure(f"could not read inside netns {ref.name}")
    ok, val = pickle.loads(data)
    if not ok:
        if "PermissionError" in val or "Operation not permitted" in val:
            raise Failure(f"entering netns {ref.name} needs root (CAP_SYS_ADMIN): {val}")
        raise Failure(f"reading inside netns {ref.name} failed: {val}")
    return cast(T, val)


def open_in(ref: NetnsRef, path: str, flags: int = os.O_RDONLY) -> int:
    """Open a file as seen inside the netns and return the fd.

    A /proc/net file keeps the netns it was opened in, so the parent then reads
    the kernel's output directly, with no copy through a pipe.
    """
    if is_current(ref):
        return os.open(path, flags)
    here = "/proc/thread-self/net/" + path[len("/proc/net/"):] if path.startswith("/proc/net/") else path
    # this thread enters the netns, opens, comes back: no fork
    fd: int = _os_errors(ref, path, lambda: run_in_thread(ref, os.open, here, flags | os.O_CLOEXEC))
    return fd


def socket_in(ref: NetnsRef, family: int, type_: int, proto: int) -> int:
    """A socket created inside the netns (netlink sockets belong to the netns they were made in)."""
    if is_current(ref):
        return socket.socket(family, type_, proto).detach()
    # a socket belongs to the netns of the thread that made it: made here, in the netns, without a fork
    fd: int = _os_errors(ref, "a netlink socket",
                         lambda: run_in_thread(ref, lambda: socket.socket(family, type_, proto).detach()))
    return fd


def _os_errors(ref: NetnsRef, what: str, fn: Callable[[], T]) -> T:
    """``fn()``, with a failure to enter the netns raised as the OSError a caller of open() expects."""
    try:
        return fn()
    except Failure as e:
        text = str(e)
        if "needs root" in text:
            raise PermissionError(f"{what} in netns {ref.name}: {text}") from None
        if "No such file" in text or "FileNotFoundError" in text:
            raise FileNotFoundError(what) from None
        raise OSError(f"{what} in netns {ref.name} failed: {text}") from None


def stream_in(ref: NetnsRef, path: str) -> io.FileIO:
    """An open binary stream (unbuffered: a raw ``FileIO``) of a file as read inside the netns.
    The scanner reads it with ``_fastscan.read_full``; wrap it in ``io.BufferedReader`` for reads
    of a given size."""
    return io.FileIO(open_in(ref, path), "rb")


def preexec_for(ref: NetnsRef) -> Callable[[], None] | None:
    """A preexec_fn that moves a subprocess into the netns."""
    if is_current(ref):
        return None
    return lambda: setns(ref.path)
