"""Benchmark `top --rate` beside `conntrack -E`, and `record`'s idle cost, in one run.

    .venv/bin/python bench/rate_record.py [--quick]

1. Event throughput: one netns, both listeners subscribed at once, then a burst of N new entries
   (`conntrack -R`, ~10^5 per second) and lab UDP traffic on loopback (4 senders, new flows).
   Prints how many NEW events each counted: `ctdoctor top --rate` and
   `conntrack -E -e NEW -o timestamp | wc -l`, and whether each lost events (ENOBUFS).
2. `record --interval 1` with 20 namespaces for 60 s and nothing happening: its CPU %
   (user + system of it and its children, from /proc).
Needs root, conntrack, ip. Everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
CTD = [sys.executable, "-m", "ctdoctor"]


def netns_add(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "netns", "exec", name, "nft", ("add table inet b; add chain inet b o { type filter hook "
                    "output priority 0; }; add rule inet b o ct state new accept")], check=True)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime (fields 14-17)
    return sum(int(x) for x in parts[11:15]) / os.sysconf("SC_CLK_TCK")


def burst(ns: str, n: int, mode: str, window: float) -> dict:
    """Start both listeners, make n new entries, and return what each counted."""
    ours = subprocess.Popen([*CTD, "--netns", ns, "top", "--rate", "--by", "src", "--interval", str(window), "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    theirs = subprocess.Popen(f"ip netns exec {ns} conntrack -E -e NEW -o timestamp 2>/tmp/{ns}.err | wc -l",
                              shell=True, stdout=subprocess.PIPE)
    time.sleep(1.0)  # both subscribed
    t0 = time.monotonic()
    if mode == "load":
        from ctdoctor.lab.scenarios import _udp_unreplied_lines

        path = f"/tmp/{ns}.ct"
        with open(path, "w") as f:
            f.write(_udp_unreplied_lines(n, timeout=30))
        t0 = time.monotonic()
        subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-R", path], check=True, capture_output=True)
        os.unlink(path)
    else:
        per = n // 4
        procs = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "ctdoctor.lab.traffic", "paced",
                                   f"127.0.0.{10 + i}", "127.0.0.1", "5353", str(per / 4.0), "4"],
                                  stdout=subprocess.DEVNULL) for i in range(4)]
        for p in procs:
            p.wait()
    took = time.monotonic() - t0
    out, _err = ours.communicate(timeout=window + 60)
    doc = json.loads(out)
    subprocess.run(["ip", "netns", "exec", ns, "pkill", "-INT", "-x", "conntrack"], capture_output=True)
    tw = theirs.communicate(timeout=30)[0]
    terr = ""
    if os.path.exists(f"/tmp/{ns}.err"):
        with open(f"/tmp/{ns}.err") as f:
            terr = f.read()
    subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-F"], capture_output=True)
    return {"made": n, "seconds": round(took, 2), "ours": doc["new"], "ours_lost": doc["lost_events"],
            "theirs": int(tw.strip() or 0), "theirs_lost": "ENOBUFS" in terr}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    for t in ("conntrack", "ip"):
        if not shutil.which(t):
            raise SystemExit(f"needs {t}")
    tag = uuid.uuid4().hex[:5]
    made: list[str] = []
    try:
        ns = f"ctdbench-{tag}"
        netns_add(ns)
        made.append(ns)
        n_load = 50000 if a.quick else 200000
        r = burst(ns, n_load, "load", 8.0 if a.quick else 12.0)
        print(f"1a. burst of {r['made']} new entries over ctnetlink in {r['seconds']} s "
              f"({r['made'] / max(r['seconds'], 1e-9):,.0f}/s):")
        print(f"    ctdoctor top --rate counted {r['ours']} (lost events: {r['ours_lost']}); "
              f"conntrack -E | wc -l counted {r['theirs']} (ENOBUFS: {r['theirs_lost']}); "
              f"ratio {r['ours'] / max(r['theirs'], 1):.2f}")
        r = burst(ns, 8000 if a.quick else 40000, "udp", 7.0)
        print(f"1b. lab UDP traffic, {r['made']} new flows from 4 senders in {r['seconds']} s:")
        print(f"    ctdoctor top --rate counted {r['ours']} (lost: {r['ours_lost']}); "
              f"conntrack -E | wc -l counted {r['theirs']} (ENOBUFS: {r['theirs_lost']})")

        for i in range(20):
            name = f"ctdbench-{tag}-{i}"
            netns_add(name)
            made.append(name)
        seconds = 15 if a.quick else 60
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.Popen([*CTD, "record", "--dir", d, "--interval", "1"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(3)  # past start-up (imports, first discovery)
            c0, t0 = cpu_seconds(p.pid), time.monotonic()
            time.sleep(seconds)
            c1, t1 = cpu_seconds(p.pid), time.monotonic()
            p.terminate()
            p.wait(10)
        print(f"2. record --interval 1, {len(made)} namespaces and init, idle for {seconds} s: "
              f"{(c1 - c0) / (t1 - t0) * 100:.2f}% of one CPU")
        return 0
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for name in made[:1]:
            try:
                os.unlink(f"/tmp/{name}.err")
            except OSError:
                pass


if __name__ == "__main__":
    raise SystemExit(main())
