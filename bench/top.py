"""Benchmark `ctdoctor top` against the tools operators run instead, all in one run, and write the
figures into bench/RESULTS.md (its `bench/top.py` section) with the machine they came from.

    .venv/bin/python bench/top.py [--repeat N] [--quick] [--no-write]

What is compared (ratio = ctdoctor's time / the other tool's; below 1, ctdoctor is faster):
  1. a saved 1,048,576-line listing: `ctdoctor top --by src --file F` (C scanner; and the pure-Python
     one, CTDOCTOR_NO_ACCEL=1, also with `--by src,dport,state`) against
     `awk '{for(i=1;i<=NF;i++) if($i~/^src=/){print $i;break}}' F | sort | uniq -c | sort -rn | head`;
     the C and Python outputs must be identical (checked);
  2. a live netns filled with 262,144 ASSURED entries (conntrack -R): `ctdoctor --netns NS top --by src`
     against a bare `cat /proc/net/nf_conntrack` in that netns, and against the conntrack -L pipeline;
  3. the ctnetlink path: `top --via netlink` against `conntrack -L > /dev/null`, as entries per second
     (ratio = ctdoctor's throughput / conntrack's: above 1, ctdoctor is faster);
  4. peak RSS of `top --by src --file` over a 4,194,304-line listing.
Commands of a comparison run in turns (A B A B ...) and each figure is the best of --repeat runs, so
a busy moment of a shared machine slows both. ctdoctor runs as installed (its console script, byte
code compiled first). Needs root, conntrack, ip, awk, sort; removes what it makes (files, the netns).
No test asserts on these timings: this script prints them and says which targets are met.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "RESULTS.md")
BEGIN, END = "<!-- bench/top.py: begin (written by the script) -->", "<!-- bench/top.py: end -->"
AWK = "awk '{for(i=1;i<=NF;i++) if($i~/^src=/){print $i;break}}'"
PIPE = "| sort | uniq -c | sort -rn | head"
# name: (target, "le" = ratio at most, "ge" = at least)
TARGETS = {
    "saved_c": (0.25, "le"), "saved_py_src": (1.5, "le"), "saved_py_multi": (2.5, "le"),
    "live_proc_vs_cat": (1.2, "le"), "netlink_vs_conntrack": (1.0, "ge"), "rss_mb": (120, "le"),
}


def ctdoctor_cmd() -> list[str]:
    """The console script beside this interpreter (as users run it), else -m."""
    script = os.path.join(os.path.dirname(sys.executable), "ctdoctor")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "ctdoctor"]


def env_for(python: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "CTDOCTOR_NO_ACCEL")}
    if python:
        env["CTDOCTOR_NO_ACCEL"] = "1"
    return env


def run_once(cmd, env=None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, shell=isinstance(cmd, str), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"failed: {cmd}: {r.stderr.decode()[:400]}")
    return dt


def in_turns(cmds: dict, repeat: int) -> dict[str, dict]:
    """Each command ``repeat`` times, in turns; {name: {best, median}} in seconds."""
    times: dict[str, list[float]] = {k: [] for k in cmds}
    names = list(cmds)
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:  # a different one goes first each round
            cmd, env = cmds[name]
            times[name].append(run_once(cmd, env))
    return {k: {"best": min(v), "median": statistics.median(v)} for k, v in times.items()}


# A child's peak RSS counts the memory of the process it was forked from, before its exec: the
# command is started from a small fresh interpreter, which reports what wait4 says.
_RSS = ("import os, subprocess, sys\n"
        "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
        "_, status, ru = os.wait4(p.pid, 0)\n"
        "print(ru.ru_maxrss if status == 0 else -1)\n")


def peak_rss_mb(cmd, env=None) -> float:
    r = subprocess.run([sys.executable, "-c", _RSS, *cmd], capture_output=True, text=True, env=env)
    kib = int(r.stdout.strip() or -1)
    if kib < 0:
        raise SystemExit(f"failed: {cmd}: {r.stderr[:300]}")
    return kib / 1024


def gen(n: int, path: str) -> None:
    subprocess.run([sys.executable, os.path.join(HERE, "gen_listing.py"), str(n), path], check=True)


def machine() -> dict:
    def out(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    from ctdoctor.listing.accel import accelerated

    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(), "mem_gib": round(mem, 1),
            "python": platform.python_version(), "conntrack": out("conntrack --version").split("\n")[0],
            "awk": (out("awk -W version 2>&1 | head -1") or out("awk --version | head -1")),
            "c_scanner": accelerated()}


def fill_netns(ns: str, n: int, work: str) -> float:
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    load = os.path.join(work, "load.txt")
    with open(load, "w") as f:
        for i in range(n):
            d = f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
            s = f"10.{(i >> 12) & 255}.{(i >> 4) & 255}.{1 + (i & 15)}"  # many sources, as a NAT gateway sees
            f.write(f"-A -t 431999 -u SEEN_REPLY,ASSURED -s {s} -d {d} -r {d} -q {s} -p tcp --sport 40000 "
                    f"--dport 80 --reply-port-src 80 --reply-port-dst 40000 --state ESTABLISHED\n")
    t = time.perf_counter()
    subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-R", load], check=True, capture_output=True)
    return time.perf_counter() - t


def netns_count(ns: str) -> int:
    r = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"],
                       capture_output=True, text=True, check=True)
    return int(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller inputs, 2 repeats (a smoke run; not written)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md as it is")
    a = ap.parse_args()
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("conntrack", "ip", "awk", "sort")):
        raise SystemExit("bench/top.py needs root and conntrack, ip, awk, sort")
    repeat = 2 if a.quick else a.repeat
    n_saved, n_live, n_rss = (1 << 20, 1 << 18, 1 << 22) if not a.quick else (1 << 16, 1 << 14, 1 << 17)
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        n_live = min(n_live, int(f.read()))
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "src", "ctdoctor")],
                   env=env_for(), check=False)
    ctd = ctdoctor_cmd()
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    work = tempfile.mkdtemp(prefix="ctdoctor-bench-")
    ns = f"ctdbench-{uuid.uuid4().hex[:6]}"
    res: dict = {}
    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    try:
        # 1. the saved listing
        f1 = os.path.join(work, "listing.txt")
        gen(n_saved, f1)
        for by in ("src", "src,dport,state"):
            outs = [subprocess.run([*ctd, "top", "--by", by, "--limit", "0", "--format", "json", "--file", f1],
                                   capture_output=True, env=env_for(py), check=True).stdout for py in (False, True)]
            c_doc, py_doc = (json.loads(o) for o in outs)
            same = c_doc["rows"] == py_doc["rows"] and c_doc["total"] == py_doc["total"]
            if not same:
                raise SystemExit(f"the C and Python scanners disagree on --by {by}: not a benchmark, a bug")
        t = in_turns({"awk": (f"{AWK} {f1} {PIPE}", None),
                      "c": ([*ctd, "top", "--by", "src", "--file", f1], env_for()),
                      "py": ([*ctd, "top", "--by", "src", "--file", f1], env_for(True)),
                      "c_multi": ([*ctd, "top", "--by", "src,dport,state", "--file", f1], env_for()),
                      "py_multi": ([*ctd, "top", "--by", "src,dport,state", "--file", f1], env_for(True))}, repeat)
        awk = t["awk"]["best"]
        res["saved_c"], res["saved_py_src"] = t["c"]["best"] / awk, t["py"]["best"] / awk
        res["saved_py_multi"] = t["py_multi"]["best"] / awk
        say(f"1. saved listing, {n_saved:,} lines (C and Python results identical: checked)")
        say(f"   awk | sort | uniq -c pipeline         {awk:7.3f} s")
        for k, label in (("c", "top --by src, C scanner"), ("py", "top --by src, pure Python"),
                         ("c_multi", "top --by src,dport,state, C"), ("py_multi", "top --by src,dport,state, Python")):
            say(f"   {label:38s} {t[k]['best']:7.3f} s  ratio {t[k]['best'] / awk:5.2f}")

        # 2. a live netns through /proc
        loaded = fill_netns(ns, n_live, work)
        count = netns_count(ns)
        say(f"2. live netns: {count:,} entries loaded with conntrack -R in {loaded:.2f} s")
        t = in_turns({"cat": (["ip", "netns", "exec", ns, "cat", "/proc/net/nf_conntrack"], None),
                      "c": ([*ctd, "--netns", ns, "top", "--by", "src"], env_for()),
                      "pipe": (f"ip netns exec {ns} conntrack -L 2>/dev/null | {AWK} {PIPE}", None)}, repeat)
        py_live = in_turns({"py": ([*ctd, "--netns", ns, "top", "--by", "src"], env_for(True))}, max(2, repeat // 2))
        cat = t["cat"]["best"]
        res["live_proc_vs_cat"] = t["c"]["best"] / cat
        say(f"   cat /proc/net/nf_conntrack             {cat:7.3f} s")
        say(f"   top --by src (C, /proc)                {t['c']['best']:7.3f} s  ratio {res['live_proc_vs_cat']:5.2f} "
            f"to cat, {t['c']['best'] / t['pipe']['best']:5.2f} to the conntrack -L pipeline "
            f"({t['pipe']['best']:.3f} s)")
        say(f"   top --by src (pure Python, /proc)      {py_live['py']['best']:7.3f} s  ratio "
            f"{py_live['py']['best'] / cat:5.2f} to cat")

        # 3. ctnetlink
        t = in_turns({"conntrack": (["ip", "netns", "exec", ns, "conntrack", "-L"], None),
                      "c": ([*ctd, "--netns", ns, "top", "--by", "src", "--via", "netlink"], env_for())}, repeat)
        py_nl = in_turns({"py": ([*ctd, "--netns", ns, "top", "--by", "src", "--via", "netlink"], env_for(True))}, 1)
        ctl, nl = t["conntrack"]["best"], t["c"]["best"]
        res["netlink_vs_conntrack"] = ctl / nl
        say(f"3. ctnetlink: conntrack -L > /dev/null {ctl:.3f} s = {count / ctl:,.0f} entries/s; top --via netlink "
            f"{nl:.3f} s = {count / nl:,.0f} entries/s -> {ctl / nl:.2f}x conntrack's throughput; pure Python "
            f"{py_nl['py']['best']:.3f} s = {count / py_nl['py']['best']:,.0f} entries/s")
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)

        # 4. peak RSS
        f3 = os.path.join(work, "listing-big.txt")
        os.unlink(f1)
        gen(n_rss, f3)
        rss = peak_rss_mb([*ctd, "top", "--by", "src", "--file", f3], env_for())
        rss_py = peak_rss_mb([*ctd, "top", "--by", "src", "--file", f3], env_for(True))
        res["rss_mb"] = rss
        say(f"4. peak RSS, top --by src over {n_rss:,} lines: C {rss:.0f} MB, pure Python {rss_py:.0f} MB")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    met = {k: (res[k] <= v if how == "le" else res[k] >= v) for k, (v, how) in TARGETS.items() if k in res}
    for k, (v, how) in TARGETS.items():
        if k in res:
            say(f"   target {k}: {res[k]:.2f} {'<=' if how == 'le' else '>='} {v}: {'met' if met[k] else 'NOT met'}")
    if not a.quick and not a.no_write:
        write_results(info, res, met, lines, repeat)
        print(f"written: {os.path.relpath(RESULTS, ROOT)}")
    return 0


def write_results(info: dict, res: dict, met: dict, lines: list[str], repeat: int) -> None:
    rows = [("saved listing 1 M lines, `top --by src --file`, C scanner / awk pipeline", "saved_c"),
            ("the same, pure Python (`CTDOCTOR_NO_ACCEL=1`) / awk pipeline", "saved_py_src"),
            ("`--by src,dport,state`, pure Python / awk pipeline", "saved_py_multi"),
            ("live netns 262,144 entries via /proc, `top --by src` / `cat /proc/net/nf_conntrack`", "live_proc_vs_cat"),
            ("ctnetlink, `top --via netlink` throughput / `conntrack -L` throughput", "netlink_vs_conntrack"),
            ("peak RSS over 4 M lines, C scanner (MB)", "rss_mb")]
    table = ["| what | ratio | target | met |", "|---|---|---|---|"]
    for text, k in rows:
        v, how = TARGETS[k]
        table.append(f"| {text} | {res[k]:.2f} | {'≤' if how == 'le' else '≥'} {v} | {'yes' if met[k] else 'no'} |")
    body = "\n".join([
        BEGIN, "", f"## `top` against awk, cat and conntrack (`bench/top.py`, {info['date']})", "",
        ("Command, as root from the repository: `.venv/bin/python bench/top.py` "
         f"(best of {repeat} runs per command, the commands of a comparison run in turns)."), "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items() if k != "date") + ".", "",
        *table, "", "Output of that run:", "", "```", *lines, "```", "", END])
    old = "# Benchmark results\n"
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            old = f.read()
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + body + old[old.index(END) + len(END):]
    else:
        head, sep, rest = old.partition("\n\n")
        new = head + sep + body + "\n\n" + rest
    with open(RESULTS + ".tmp", "w") as f:
        f.write(new)
    os.replace(RESULTS + ".tmp", RESULTS)


if __name__ == "__main__":
    raise SystemExit(main())
