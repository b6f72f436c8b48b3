"""How ctdoctor grows with the number of network namespaces (a Kubernetes node), in one run.

    .venv/bin/python bench/namespaces.py [--counts 1,110,250,1000] [--full 2]

For each count N it makes N throwaway namespaces (each with a rule that makes conntrack track it and
10 ASSURED entries loaded over ctnetlink; ``--full`` of them filled to nf_conntrack_max), then measures:
  - ``ctdoctor`` (the doctor, text, with its 1 s counter sample): wall time;
  - ``ctdoctor status --netns all`` (no sample): wall time;
  - the exporter's scrape of /metrics (100 sequential scrapes: median, p99), as Prometheus would;
  - the exporter's background refresh (listings, state breakdown, findings): CPU seconds (user +
    system) of one refresh in the worker process the exporter keeps (``export.refresh.Worker``, the
    median of 3 after a first one), and ``exporter --textfile --once`` as a whole (interpreter
    start-up, discovery, held files, the refresh, the file) for comparison.
Targets (issue 19, at 250 namespaces): doctor <= 2 s wall, status <= 1 s, scrape p50 <= 20 ms,
refresh <= 2 s CPU. Needs root, ip, nft, conntrack. Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))
CTD = [sys.executable, "-m", "ctdoctor"]
TARGETS = {"doctor_s": 2.0, "status_s": 1.0, "scrape_p50_ms": 20.0, "refresh_cpu_s": 2.0}
RULE = "add table inet t; add chain inet t o { type filter hook output priority 0; }; add rule inet t o ct state new accept"


def entries(n: int, first: int = 0) -> str:
    out = []
    for i in range(first, first + n):
        d = f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        out.append(f"-A -t 431999 -u SEEN_REPLY,ASSURED -s 127.0.0.1 -d {d} -r {d} -q 127.0.0.1 -p tcp "
                   "--sport 40000 --dport 80 --reply-port-src 80 --reply-port-dst 40000 --state ESTABLISHED\n")
    return "".join(out)


def make(n: int, full: int, prefix: str, tmp: str) -> list[str]:
    names = [f"{prefix}{i}" for i in range(n)]
    small = os.path.join(tmp, "small.save")
    with open(small, "w") as f:
        f.write(entries(10))
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        gmax = int(f.read())
    big = os.path.join(tmp, "full.save")
    if full:
        with open(big, "w") as f:
            f.write(entries(gmax))
    for i, name in enumerate(names):
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "netns", "exec", name, "nft", RULE], check=True)
        subprocess.run(["ip", "netns", "exec", name, "conntrack", "-R", big if i < full else small],
                       capture_output=True)
    return names


def remove(names: list[str]) -> None:
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def wall(argv: list[str]) -> float:
    t = time.monotonic()
    r = subprocess.run(argv, capture_output=True)
    if r.returncode not in (0, 1, 2, 3):
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.decode()[-300:]}")
    return time.monotonic() - t


def cpu_of(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.decode()[-300:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def scrapes(n: int) -> tuple[float, float, int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    p = subprocess.Popen([*CTD, "exporter", "--listen", f"127.0.0.1:{port}", "--netns", "all", "--refresh", "600"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                if time.monotonic() > end:
                    raise SystemExit("the exporter did not answer") from None
                time.sleep(0.2)
        time.sleep(1.0)  # discovery settled
        lat = []
        body = b""
        for _ in range(n):
            t = time.monotonic()
            body = urllib.request.urlopen(url, timeout=10).read()
            lat.append((time.monotonic() - t) * 1000)
        lat.sort()
        series = sum(1 for ln in body.decode().splitlines() if ln and not ln.startswith("#"))
        return statistics.median(lat), lat[int(len(lat) * 0.99) - 1], series
    finally:
        p.terminate()
        p.wait(timeout=10)


def refresh_cpu(rounds: int = 3) -> float:
    """CPU seconds of one background refresh as the exporter runs it: its worker process, after the
    first refresh (which also pays the interpreter's start and imports), median of ``rounds``."""
    from ctdoctor.monitor.refresh import Worker

    w = Worker("all", 600)
    try:
        first = w.refresh()
        if not first.ok:
            raise SystemExit(f"refresh failed: {first.error}")
        return statistics.median(w.refresh().cpu_seconds for _ in range(rounds))
    finally:
        w.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", default="1,110,250,1000")
    ap.add_argument("--full", type=int, default=2, help="namespaces filled to the max (at counts above it)")
    ap.add_argument("--scrapes", type=int, default=100)
    a = ap.parse_args()
    os.chdir(ROOT)
    os.environ["PYTHONPATH"] = os.path.join(ROOT, "src")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in a.counts.split(",")]:
            prefix = f"ctdb-{uuid.uuid4().hex[:4]}-"
            names = []
            try:
                names = make(n, a.full if n > a.full else 0, prefix, tmp)
                doctor = wall([*CTD])
                status = wall([*CTD, "status", "--netns", "all", "--interval", "0"])
                p50, p99, series = scrapes(a.scrapes)
                refresh = refresh_cpu()
                with tempfile.TemporaryDirectory() as tf:
                    once = cpu_of([*CTD, "exporter", "--netns", "all", "--textfile", tf, "--once"])
            finally:
                remove(names)
            rows.append((n, doctor, status, p50, p99, refresh, series, once))
            print(f"{n} namespaces: doctor {doctor:.2f} s, status {status:.2f} s, scrape p50 {p50:.1f} ms "
                  f"p99 {p99:.1f} ms ({series} series), refresh {refresh:.2f} s CPU (textfile --once "
                  f"{once:.2f} s)", flush=True)
    print()
    print("| namespaces (+ init) | doctor, wall (1 s sample) | status --netns all | scrape p50 / p99 | "
          "series per scrape | refresh CPU | textfile --once CPU |")
    print("|---|---|---|---|---|---|---|")
    for n, d, st, p50, p99, r, ser, once in rows:
        print(f"| {n} | {d:.2f} s | {st:.2f} s | {p50:.1f} / {p99:.1f} ms | {ser} | {r:.2f} s | {once:.2f} s |")
    at = {r[0]: r for r in rows}
    if 250 in at:
        _, d, s, p50, _p99, r, _ser, _once = at[250]
        print(f"\nat 250: doctor {d:.2f} s (target <= {TARGETS['doctor_s']}), status {s:.2f} s (<= "
              f"{TARGETS['status_s']}), scrape p50 {p50:.1f} ms (<= {TARGETS['scrape_p50_ms']}), refresh {r:.2f} s "
              f"CPU (<= {TARGETS['refresh_cpu_s']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
