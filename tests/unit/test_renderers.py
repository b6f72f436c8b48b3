"""The text renderers on their own: the one formatter, the table layout, the watch screens' memory,
lab run's observed values. In-process, no CLI."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from ctdoctor.render import fmt
from ctdoctor.render.table import Column, layout
from tests.unit.test_real_hosts import PYTHON_ON_SCREEN


def text_of(renderable, width: int = 80) -> str:
    con = Console(width=width, record=True, no_color=True, highlight=False)
    with con.capture() as cap:
        con.print(renderable)
    return cap.get()


@pytest.mark.parametrize(("value", "said"), [
    (0, "0"), (1048576, "1,048,576"), (2.0, "2"), (0.25, "0.25"), (3.814697265625e-06, "< 0.001"),
    (1234.5678, "1,235"), (12.345, "12.3"), (None, "?"), (True, "yes"), (float("nan"), "?"),
])
def test_numbers(value, said):
    assert fmt.num(value) == said


@pytest.mark.parametrize(("fraction", "said"), [
    (0, "0%"), (1.0, "100%"), (0.9999, "99.9%"), (0.963, "96.3%"), (0.9, "90%"), (0.014, "1.4%"),
    (0.0002, "0.02%"), (0.00001, "< 0.01%"), (None, "?"),
])
def test_percentages(fraction, said):
    assert fmt.pct(fraction) == said


def test_sizes_durations_rates_booleans():
    assert [fmt.size(x) for x in (0, 512, 20447232, 3973369856)] == ["0 B", "512 B", "19.5 MiB", "3.7 GiB"]
    assert [fmt.duration(x) for x in (0.4, 1, 12, 125, 3720, 432000, 90000)] == \
        ["0.4 s", "1 s", "12 s", "2m05s", "1h02m", "5d", "1d01h"]
    assert [fmt.rate(x) for x in (0, 0.2, 12, 410.5, 1234, 3_400_000)] == ["0", "0.2", "12", "410", "1.2k", "3.4M"]
    assert [fmt.yesno(x) for x in (True, False, None)] == ["yes", "no", "?"]
    assert fmt.value({"TIME_WAIT": 2000, "ok": False, "l": [1, None]}) == "TIME_WAIT 2,000, ok no, l 1, unknown"
    assert not PYTHON_ON_SCREEN.search(fmt.value([{"ok": False}, ("8080", 1), None, 3.814697265625e-06]))


def test_elision_keeps_both_ends_and_never_leaves_one_character():
    assert fmt.elide("cni-4f1e2b3c-9a2c-11ef-8e1d-0242ac120002", 16) == "cni-4f1e…c120002"  # 16 cells
    assert fmt.elide("short", 16) == "short"
    assert fmt.elide_end("a reload would reset 2 settings to their defaults", 24) == "a reload would reset…"
    assert fmt.sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█" and fmt.sparkline([5, 5]) == "▁▁"


def test_a_table_drops_optional_columns_before_it_cuts_a_name():
    names = ["kube-system/coredns-5d78c9869d-xk2lp", "init"]
    cols = [Column("netns", names, align="left", flex=True, min_width=8), Column("count", ["131,072", "1"]),
            Column("memory", ["40.0 MiB~", "0 B"], optional=1)]
    wide = [t.plain for t in layout(cols, 80)]
    assert "memory" in wide[0] and names[0] in wide[2]
    narrow = [t.plain for t in layout(cols, 46)]
    assert "memory" not in narrow[0] and names[0] in narrow[2]  # the name stays whole, memory goes
    tight = [t.plain for t in layout(cols, 30)]
    assert all(len(ln) <= 30 for ln in tight) and "…" in tight[2] and tight[2].rstrip().endswith("131,072")


def test_numbers_are_right_aligned_under_their_header():
    cols = [Column("netns", ["a", "b"], align="left", flex=True), Column("count", ["1", "262,144"])]
    head, _rule, r1, r2 = (t.plain for t in layout(cols, 80))
    assert head.rstrip().endswith("count") and r1.endswith("1") and r2.endswith("262,144")
    assert len(head.rstrip()) == len(r1) == len(r2)


def _status_doc(count: int, name: str = "init") -> dict:
    return {"host": {"hostname": "h", "kernel": "6.1", "source": "live", "root": "/", "cpus": 2,
                     "mem_total": 1 << 30},
            "namespaces": [{"name": name, "pod": None, "count": count, "max": 262144, "buckets": 262144,
                            "fill": count / 262144, "memory": {"bytes": count * 320, "estimated": True},
                            "stats": {"drop": 0, "insert_failed": 0, "early_drop": 0, "insert": 0},
                            "rates": {"drop": 0.0, "insert_failed": 0.0, "early_drop": 0.0, "insert": 0.0}}],
            "modules": [], "settings": {"non_default": [], "drift": []}, "kernel_log": {"events": {}}, "notes": []}


def test_the_status_watch_keeps_its_columns_and_tells_the_rate_it_shows():
    from ctdoctor.render.status_text import WatchState, render

    w = WatchState(interval=1.0, keys=True)
    first = _status_doc(5)
    w.observe(first, now=100.0)
    a = text_of(render(first, width=80, watch=w))
    second = _status_doc(200_005)
    w.observe(second, now=101.0)
    b = text_of(render(second, width=80, watch=w))
    third = _status_doc(7)
    w.observe(third, now=102.0)
    c = text_of(render(third, width=80, watch=w))
    assert re.search(r"every 1 s  \d\d:\d\d:\d\d", a) and "q quits" in a
    head = [next(ln for ln in t.splitlines() if ln.startswith("netns")) for t in (a, b, c)]
    assert head[1] == head[2]  # the columns stay where the widest frame put them: no reflow
    assert "new/s" in head[0] and "200k" in b and "new/s: change of the count" in b
    assert all(len(ln) <= 80 for t in (a, b, c) for ln in t.splitlines())


def test_top_watch_header_and_delta():
    from ctdoctor.render.top_text import TopWatch, render

    def doc(n):
        return {"namespaces": [{"source": "/proc/net/nf_conntrack", "netns": "init", "listed": n, "count": n,
                                "max": 262144}], "matched": n, "total": n, "by": ["dport"], "groups": 1,
                "accounting": False,
                "rows": [{"key": {"dport": 9999}, "count": n, "share": 1.0, "states": {"SYN_SENT": n}}]}

    w = TopWatch(interval=0.5, keys=False)
    text_of(render(doc(40), watch=w, width=80))
    out = text_of(render(doc(45), watch=w, width=80))
    assert "every 0.5 s" in out and "q quits" not in out and "Δ" in out and "+5" in out and "▁█" in out


def test_lab_run_shows_values_not_reprs():
    from ctdoctor.render.lab_text import render_run

    doc = {"scenario": "table-full", "netns": "ctdlab-x", "built": ["262144 entries"],
           "observed": {"count": 262144, "full": True, "states": {"ESTABLISHED": 262144}, "fill": 0.99999,
                        "connect": [{"ok": False, "error": "timed out"}], "lines": ["a", "b"], "nothing": None},
           "explanation": "the table is full"}
    out = text_of(render_run(doc, kept=False))
    assert not [ln for ln in out.splitlines() if PYTHON_ON_SCREEN.search(ln)], out
    assert "full: yes" in out and "states: ESTABLISHED 262,144" in out


def test_a_piped_watch_prints_one_frame_per_interval():
    """`status --watch N | tee log`: every frame, one after the other (on an image: no kernel needed)."""
    import os
    import select
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import IMAGES

    p = subprocess.Popen([sys.executable, "-m", "ctdoctor", "--root", str(IMAGES / "sosreport-node7-k8s"), "status",
                          "--watch", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "COLUMNS": "80"})
    out = b""
    try:
        end = time.monotonic() + 30
        while out.count(b"ctdoctor status --watch") < 3 and time.monotonic() < end:
            if select.select([p.stdout], [], [], 0.5)[0]:
                out += os.read(p.stdout.fileno(), 65536)
    finally:
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=10)
    text = (out + rest).decode()
    assert text.count("ctdoctor status --watch  every 0.2 s") >= 3, text[-500:]
    assert "q quits" not in text and "\x1b[" not in text  # no keys, no cursor moves: frames as lines
    assert p.returncode == 0 and b"Traceback" not in err


def _finding(netns: str, summary: str, fix_netns: str | None = None) -> dict:
    return {"id": "CT013", "severity": "warning", "title": "one source holds much of the table", "summary": summary,
            "netns": netns, "pod": None, "evidence": {"share": {"value": 0.4, "source": "/proc/net/nf_conntrack"}},
            "explanation": "One key holds the table.",
            "fixes": [{"argv": ["ctdoctor", "top", "--netns", fix_netns or netns, "--by", "src"],
                       "text": f"ctdoctor top --netns {fix_netns or netns} --by src", "where": "here"}]}


def test_a_check_over_many_keys_is_one_entry_and_one_block():
    from ctdoctor.render.doctor_text import render

    doc = {"host": {"hostname": "h", "kernel": "6.1", "source": "live"},
           "summary": {"critical": 0, "warning": 4, "info": 0, "unknown": 0}, "unknown": [], "notes": [],
           "findings": [_finding("init", "src 10.0.0.1 holds 40%"), _finding("init", "dport 53 holds 60%"),
                        _finding("init", "dst 10.0.0.9 holds 30%"), _finding("cni-1", "src 10.2.0.1 holds 90%")]}
    out = text_of(render(doc, width=80))
    assert "WARN CT013 4 findings in 2 namespaces (init, cni-1)" in out
    assert out.count("WARNING CT013") == 2  # one block per namespace, not per key
    assert out.count("$ ctdoctor top --netns init --by src") == 2  # the overview's first fix, and once below
    assert "share: 40%" in out and "0.4" not in out
    one = {**doc, "findings": doc["findings"][:2]}
    out = text_of(render(one, width=200))
    assert "WARN CT013 init: src 10.0.0.1 holds 40%; dport 53 holds 60%" in out


def test_a_watch_frame_fits_the_screen_with_the_fullest_namespaces():
    from ctdoctor.render.status_text import WatchState, render

    doc = _status_doc(10)
    doc["namespaces"] += [{**_status_doc(i * 1000, f"cni-{i:02d}")["namespaces"][0]} for i in range(1, 41)]
    doc["notes"] = ["a note that would not fit"]
    w = WatchState(interval=2.0, keys=True, height=24)
    w.observe(doc, now=1.0)
    out = text_of(render(doc, width=80, watch=w))
    lines = out.rstrip("\n").splitlines()
    assert len(lines) <= 23, out  # never scrolls: the last row stays for the cursor
    assert "cni-40" in out and "cni-01 " not in out and lines[lines.index(next(ln for ln in lines
                                                                              if ln.startswith("netns"))) + 2] \
        .startswith("init")  # the initial namespace first, then the fullest
    assert re.search(r"… and \d+ emptier namespace\(s\)", out)
    w.height = None  # piped: every namespace, every line
    out = text_of(render(doc, width=80, watch=w))
    assert "cni-01 " in out and "a note that would not fit" in out
