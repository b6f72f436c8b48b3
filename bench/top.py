"""Benchmark `ctdoctor top` against the pipelines operators use today, measured in the same run.

    .venv/bin/python bench/top.py [--quick]

Prints ratios (ctdoctor time / other tool's time; < 1 means ctdoctor is faster):
  1. a saved 1,048,576-line listing: `ctdoctor top --by src --file F` vs
     `awk '{for(i=1;i<=NF;i++) if($i~/^src=/){print $i;break}}' F | sort | uniq -c | sort -rn | head`
  2. a live netns of 262,144 entries loaded with `conntrack -R`: `ctdoctor --netns NS top --by src` vs
     `conntrack -L | awk ... | sort | uniq -c | sort -rn | head`, and vs `cat /proc/net/nf_conntrack > /dev/null`
  3. peak RSS of `top` over a 4,194,304-line listing
  4. the ctnetlink path: `ctdoctor top --via netlink` and the decoder alone, in entries/s, vs `conntrack -L > /dev/null`
Needs root, conntrack, ip, awk, sort. Everything it makes (files, the netns) is removed at the end.
Each timing is the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CTD = [sys.executable, "-m", "ctdoctor"]
AWK = "awk '{for(i=1;i<=NF;i++) if($i~/^src=/){print $i;break}}'"
TARGETS = {"saved": 0.5, "live_vs_pipeline": 0.7, "live_vs_cat": 1.3, "rss_mb": 120, "netlink_vs_conntrack": 0.5}


def best(cmd, repeat: int, shell: bool = False, env=None) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run(cmd, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"failed: {cmd}: {r.stderr.decode()[:300]}")
    return min(times)


def peak_rss_mb(cmd) -> float:
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    if status != 0:
        raise SystemExit(f"failed: {cmd}: {p.stderr.read().decode()[:300]}")
    return ru.ru_maxrss / 1024


def gen(n: int, path: str) -> None:
    subprocess.run([sys.executable, os.path.join(HERE, "gen_listing.py"), str(n), path], check=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run, not the recorded figures)")
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("conntrack"):
        raise SystemExit("bench/top.py needs root and the conntrack command")
    n_saved, n_live, n_rss = (1 << 20, 1 << 18, 1 << 22) if not a.quick else (1 << 16, 1 << 14, 1 << 18)
    from ctdoctor.top import accelerated

    print(f"ctdoctor accelerator: {'C (_fastscan)' if accelerated() else 'pure Python'}; cpus {os.cpu_count()}")
    work = tempfile.mkdtemp(prefix="ctdoctor-bench-")
    ns = f"ctdbench-{uuid.uuid4().hex[:4]}"
    results = {}
    try:
        # 1. saved listing
        f1 = os.path.join(work, "listing-1m.txt")
        gen(n_saved, f1)
        ours = best([*CTD, "top", "--by", "src", "--file", f1], a.repeat)
        theirs = best(f"{AWK} {f1} | sort | uniq -c | sort -rn | head", a.repeat, shell=True)
        results["saved"] = ours / theirs
        print(f"1. saved listing, {n_saved} lines: ctdoctor {ours:.3f}s, awk|sort|uniq {theirs:.3f}s "
              f"-> ratio {ours / theirs:.2f} (target <= {TARGETS['saved']})")
        if not a.quick:
            py = best([*CTD, "top", "--by", "src", "--file", f1], 1, env={**os.environ, "CTDOCTOR_NO_ACCEL": "1"})
            print(f"   pure-Python fallback: {py:.3f}s -> ratio {py / theirs:.2f}")

        # 2. live netns
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        load = os.path.join(work, "load.txt")
        with open(load, "w") as f:
            for i in range(n_live):
                d = f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
                s = f"10.{(i >> 12) & 255}.{(i >> 4) & 255}.{1 + (i & 15)}"  # many sources, as a NAT gateway sees
                f.write(f"-A -t 431999 -u SEEN_REPLY,ASSURED -s {s} -d {d} -r {d} -q {s} -p tcp --sport 40000 "
                        f"--dport 80 --reply-port-src 80 --reply-port-dst 40000 --state ESTABLISHED\n")
        t = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-R", load], check=True, capture_output=True)
        print(f"   loaded {n_live} entries with conntrack -R in {time.perf_counter() - t:.2f}s")
        ours = best([*CTD, "--netns", ns, "top", "--by", "src"], a.repeat)
        pipe = best(f"ip netns exec {ns} conntrack -L 2>/dev/null | {AWK} | sort | uniq -c | sort -rn | head",
                    a.repeat, shell=True)
        cat = best(["ip", "netns", "exec", ns, "cat", "/proc/net/nf_conntrack"], a.repeat)
        results["live_vs_pipeline"], results["live_vs_cat"] = ours / pipe, ours / cat
        print(f"2. live netns, {n_live} entries: ctdoctor {ours:.3f}s, conntrack -L|awk|sort {pipe:.3f}s "
              f"-> ratio {ours / pipe:.2f} (target <= {TARGETS['live_vs_pipeline']}); cat {cat:.3f}s "
              f"-> ratio {ours / cat:.2f} (target <= {TARGETS['live_vs_cat']})")

        # 4. ctnetlink path
        nl = best([*CTD, "--netns", ns, "top", "--by", "src", "--via", "netlink"], a.repeat)
        ctl = best(["ip", "netns", "exec", ns, "conntrack", "-L"], a.repeat)
        dec = decoder_rate(ns, a.repeat)
        results["netlink_vs_conntrack"] = (n_live / nl) / (n_live / ctl)
        print(f"4. ctnetlink: ctdoctor top --via netlink {nl:.3f}s = {n_live / nl:,.0f} entries/s; decoder alone "
              f"{dec:,.0f} entries/s; conntrack -L > /dev/null {ctl:.3f}s = {n_live / ctl:,.0f} entries/s "
              f"-> speed ratio {(n_live / nl) / (n_live / ctl):.2f} (target >= {TARGETS['netlink_vs_conntrack']})")

        # 3. peak RSS
        f3 = os.path.join(work, "listing-4m.txt")
        gen(n_rss, f3)
        rss = peak_rss_mb([*CTD, "top", "--by", "src", "--file", f3])
        results["rss_mb"] = rss
        print(f"3. peak RSS over {n_rss} lines: {rss:.0f} MB (target <= {TARGETS['rss_mb']} MB)")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    ok = (results["saved"] <= TARGETS["saved"] and results["live_vs_pipeline"] <= TARGETS["live_vs_pipeline"]
          and results["live_vs_cat"] <= TARGETS["live_vs_cat"] and results["rss_mb"] <= TARGETS["rss_mb"]
          and results["netlink_vs_conntrack"] >= TARGETS["netlink_vs_conntrack"])
    print("all targets met" if ok else "some targets not met (see above)")
    return 0


def decoder_rate(ns: str, repeat: int) -> float:
    """Entries/s of the decoder alone (dump + C conversion to lines), in-process."""
    code = (
        "import socket,sys,time\n"
        "from ctdoctor.sources import ctnetlink, netns\n"
        f"ref=[r for r in netns.discover() if r.name=={ns!r}][0]\n"
        "best=1e9\n"
        f"for _ in range({repeat}):\n"
        "  s=socket.socket(fileno=netns.socket_in(ref,socket.AF_NETLINK,socket.SOCK_RAW,12))\n"
        "  t=time.perf_counter(); n=sum(c.count(b'\\n') for c in ctnetlink.lines_from(ctnetlink.dump_buffers(s)))\n"
        "  best=min(best,time.perf_counter()-t); s.close()\n"
        "print(n/best)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out)


if __name__ == "__main__":
    raise SystemExit(main())
