"""`ctdoctor flush` against conntrack-tools, in one run (issue 18).

    .venv/bin/python bench/flush.py [--rounds 3]

1. dry run over a full table (262,144 entries, nf_conntrack_max): `ctdoctor --netns NS flush --state
   UNREPLIED --dry-run` against `conntrack -L > /dev/null` (the listing an operator reads first);
2. deleting 50,000 UNREPLIED UDP entries (beside 50,000 ASSURED TCP ones that stay): `ctdoctor flush
   --state UNREPLIED` against `conntrack -D -p udp`, each on the same freshly loaded table.
Wall times, median of --rounds alternating runs; targets: both ratios <= 1.0. Needs root, ip, nft,
conntrack; the netns is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))
CTD = [sys.executable, "-m", "ctdoctor"]
RULE = "add table inet t; add chain inet t o { type filter hook output priority 0; }; add rule inet t o ct state new accept"


def sh(ns: str, *cmd: str, out=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], stdout=out, stderr=subprocess.DEVNULL, check=False)


def load(ns: str, text: str, tmp: str) -> None:
    with open(tmp, "w") as f:
        f.write(text)
    sh(ns, "conntrack", "-R", tmp)


def count(ns: str) -> int:
    return int(sh(ns, "conntrack", "-C", out=subprocess.PIPE).stdout or 0)


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    os.environ["PYTHONPATH"] = os.path.join(ROOT, "src")
    from ctdoctor.lab.scenarios import _tcp_lines, _udp_unreplied_lines

    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        gmax = int(f.read())
    ns = f"ctdbf-{uuid.uuid4().hex[:6]}"
    tmp = f"/tmp/{ns}.ct"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        sh(ns, "ip", "link", "set", "lo", "up")
        sh(ns, "nft", RULE)
        # 1. the dry run over a full table: a quarter unreplied UDP, the rest ASSURED TCP
        load(ns, _tcp_lines(gmax - gmax // 4) + _udp_unreplied_lines(gmax // 4, first=gmax), tmp)
        n = count(ns)
        ours, theirs = [], []
        for _ in range(a.rounds):
            ours.append(timed([*CTD, "--netns", ns, "flush", "--state", "UNREPLIED", "--dry-run"]))
            theirs.append(timed(["ip", "netns", "exec", ns, "conntrack", "-L"]))
        d_ours, d_theirs = statistics.median(ours), statistics.median(theirs)
        print(f"1. dry run over {n} entries: ctdoctor flush --dry-run {d_ours:.2f} s, conntrack -L {d_theirs:.2f} s: "
              f"ratio {d_ours / d_theirs:.2f} (target <= 1.0)")
        # 2. deleting 50,000 unreplied UDP entries beside 50,000 ASSURED TCP ones
        ours, theirs = [], []
        for _ in range(a.rounds):
            for who in ("ctdoctor", "conntrack"):
                sh(ns, "conntrack", "-F")
                load(ns, _tcp_lines(50_000) + _udp_unreplied_lines(50_000, first=50_000), tmp)
                before = count(ns)
                if who == "ctdoctor":
                    ours.append(timed([*CTD, "--netns", ns, "flush", "--state", "UNREPLIED"]))
                else:
                    theirs.append(timed(["ip", "netns", "exec", ns, "conntrack", "-D", "-p", "udp"]))
                left = count(ns)
                assert before - left >= 49_000 and left >= 49_000, (who, before, left)
        x_ours, x_theirs = statistics.median(ours), statistics.median(theirs)
        print(f"2. deleting 50,000 entries: ctdoctor flush {x_ours:.2f} s, conntrack -D {x_theirs:.2f} s: "
              f"ratio {x_ours / x_theirs:.2f} (target <= 1.0)")
        return 0 if d_ours <= d_theirs and x_ours <= x_theirs else 1
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        if os.path.exists(tmp):
            os.unlink(tmp)


if __name__ == "__main__":
    sys.exit(main())
