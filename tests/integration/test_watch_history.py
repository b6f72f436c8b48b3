"""status --watch starts its trend from the history a running recorder keeps (DIR/history.json): piped, its
first frame already has a sparkline of the counts the recorder saw; with no recorder on that folder, the
history is ignored."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import Netns, needs_kernel
from tests.integration.test_rate_record_live import Recording, load

pytestmark = [needs_kernel, pytest.mark.kernel]

SPARK = re.compile(r"[▁▂▃▄▅▆▇█]{2,}")


def _lines(n: int, first: int) -> str:
    return "".join(f"-A -t 600 -s 127.0.0.1 -d 127.0.0.2 -p udp --sport {first + i} --dport 53\n" for i in range(n))


def _first_frame(*args: str, timeout: float = 30) -> str:
    """``ctdoctor status --watch`` piped: its first frame (each starts with its header line)."""
    p = subprocess.Popen([sys.executable, "-m", "ctdoctor", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "COLUMNS": "120"})
    out = b""
    try:
        deadline = time.monotonic() + timeout
        assert p.stdout is not None
        os.set_blocking(p.stdout.fileno(), False)
        while time.monotonic() < deadline and out.count(b"ctdoctor status --watch") < 2:
            chunk = p.stdout.read()
            if chunk:
                out += chunk
            elif p.poll() is not None:
                break
            else:
                time.sleep(0.05)
    finally:
        p.kill()
        p.wait()
    text = out.decode(errors="replace")
    assert text.count("ctdoctor status --watch") >= 2, (text, p.stderr.read().decode() if p.stderr else "")
    return "ctdoctor status --watch" + text.split("ctdoctor status --watch")[1]


def _history(d) -> dict:
    try:
        return json.loads((d / "history.json").read_text())
    except (OSError, ValueError):
        return {}


def test_status_watch_starts_its_sparkline_from_a_running_recorder(tmp_path):
    with Netns("hist") as ns, Recording(tmp_path / "incidents", "--threshold", "0.99", "--netns", ns.name) as rec:
        for step in range(4):  # a rising count, sampled by the recorder every 0.3 s
            load(ns, _lines(50, 2000 + step * 50))
            time.sleep(0.7)
        deadline = time.monotonic() + 10
        while len(_history(rec.dir).get("netns", {}).get(ns.name, [])) < 4:
            assert time.monotonic() < deadline, (rec.log.read_text(), _history(rec.dir))
            time.sleep(0.2)
        counts = [c for _t, c, _m in _history(rec.dir)["netns"][ns.name]]
        assert counts[-1] >= 150 and len(set(counts)) > 1, counts
        frame = _first_frame("--netns", ns.name, "status", "--watch", "0.5", "--history", str(rec.dir))
        head = frame.splitlines()[0]
        assert "status --watch" in head and SPARK.search(head), frame  # the fullest netns's trend: history
        row = next(ln for ln in frame.splitlines() if ln.startswith(ns.name))
        assert SPARK.search(row), frame  # and its trend column

        # the same folder once the recorder has stopped: its history is ignored (one frame, no trend yet)
        rec.stop()
        frame = _first_frame("--netns", ns.name, "status", "--watch", "0.5", "--history", str(rec.dir))
        assert not SPARK.search(frame.splitlines()[0]), frame
