"""The exporter on the real kernel, beside the real node_exporter and Prometheus (Debian packages).

Every server listens on 127.0.0.1 on a free port, with temporary config and storage, and is
stopped (and its namespaces deleted) also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Netns, needs_kernel

pytestmark = [needs_kernel, pytest.mark.kernel]
CONTRIB = Path(__file__).parent.parent.parent / "contrib"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def metrics(url: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(get(url).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


def wait_for(fn, timeout: float, what: str, step: float = 0.2):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
        except (OSError, ValueError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what} (last: {str(last)[:300]})")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: `make test` installs it with apt")
        pytest.skip(f"{name} not installed")
    return path


class Server:
    """A background process on 127.0.0.1, stopped on exit."""

    def __init__(self, argv: list[str], url: str, **kw):
        self.argv, self.url, self.kw = argv, url, kw
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, **self.kw)
        try:
            wait_for(lambda: self.proc.poll() is None and get(self.url, 2), 30, f"{self.argv[0]} to answer")
        except BaseException:
            self.__exit__()
            raise
        return self

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def exporter(*args: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "ctdoctor", "exporter", "--listen", f"127.0.0.1:{port}", *args]
    return Server(argv, f"http://127.0.0.1:{port}/metrics")


def test_a_netns_appears_with_its_counts_and_states_and_goes_away():
    with exporter("--refresh", "1", "--discover", "0.5", "--detail", "all") as exp:
        with Netns("exp") as ns:
            ns.load_established(500)
            m = wait_for(lambda: (lambda m: m if value(m, "ctdoctor_conntrack_entries_by_state", netns=ns.name,
                                                        proto="tcp", state="ESTABLISHED") == 500 else None)(
                metrics(exp.url)), 30, "the netns's state breakdown")
            assert value(m, "ctdoctor_conntrack_entries", netns=ns.name) == ns.count() == 500
            gmax = int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
            assert value(m, "ctdoctor_conntrack_entries_limit", netns=ns.name) == gmax
            assert value(m, "ctdoctor_exporter_netns_readable", netns=ns.name) == 1
            inode = os.stat(f"/run/netns/{ns.name}").st_ino
            assert value(m, "ctdoctor_netns_info", netns=ns.name, inode=str(inode), owner="ip netns", namespace="",
                         pod="", container="") == 1
            assert value(m, "ctdoctor_exporter_refresh_success") == 1
        # deleted: every series of it is gone by the next discovery, and the exporter lives on
        wait_for(lambda: not [k for k in metrics(exp.url) if ("netns", ns.name) in k[1]], 15,
                 "the deleted netns's series to go away")
        assert exp.proc.poll() is None


def test_init_values_equal_node_exporters():
    ne_port = free_port()
    ne = Server([tool("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{ne_port}",
                 "--collector.disable-defaults", "--collector.conntrack"], f"http://127.0.0.1:{ne_port}/metrics")
    pairs = {"node_nf_conntrack_entries": "ctdoctor_conntrack_entries",
             "node_nf_conntrack_entries_limit": "ctdoctor_conntrack_entries_limit"}
    for stat in ("found", "invalid", "ignore", "insert", "insert_failed", "drop", "early_drop", "search_restart"):
        pairs[f"node_nf_conntrack_stat_{stat}"] = f"ctdoctor_conntrack_stat_{stat}_total"
    with ne, exporter("--refresh", "60") as exp:
        def same():
            theirs, ours = metrics(ne.url), metrics(exp.url)
            got = {n: (theirs.get((n, ())), value(ours, o, netns="init")) for n, o in pairs.items()}
            return got if all(a is not None and a == b for a, b in got.values()) else None

        got = wait_for(same, 20, "equal values (host counters may move between two scrapes)", step=0.05)
    assert len(got) == 10


# ---- a full netns, scraped by a real Prometheus --------------------------------------------------


@pytest.fixture(scope="module")
def full_netns():
    gmax = int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    with Netns("full") as ns:
        ns.load_established(gmax)
        assert ns.count() == gmax
        yield ns


def drop_new_connections(ns: Netns, n: int = 3) -> None:
    ns.run(sys.executable, "-m", "ctdoctor.lab.traffic", "syn", "8080", str(n), "0.3")


@pytest.fixture(scope="module")
def full_stack(full_netns):
    """The exporter and a Prometheus that scrapes it every second with ctdoctor's alert rules."""
    prom_bin = tool("prometheus")
    with exporter("--refresh", "2", "--discover", "1") as exp:
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="ctd-prom-") as tmp:
            rules = Path(tmp) / "ctdoctor.rules.yml"
            shutil.copy(CONTRIB / "prometheus" / "ctdoctor.rules.yml", rules)
            target = urllib.parse.urlparse(exp.url).netloc
            (Path(tmp) / "prometheus.yml").write_text(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                f"rule_files: ['{rules}']\n"
                "scrape_configs:\n"
                f"  - job_name: ctdoctor\n    static_configs: [{{targets: ['{target}']}}]\n")
            prom = Server([prom_bin, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
                           f"--web.listen-address=127.0.0.1:{port}"], f"http://127.0.0.1:{port}/-/ready")
            with prom:
                api = f"http://127.0.0.1:{port}/api/v1"
                yield exp, api, prom


def query(api: str, expr: str) -> list:
    doc = json.loads(get(f"{api}/query?" + urllib.parse.urlencode({"query": expr})))
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def test_prometheus_sees_the_full_netns_its_drops_and_the_alerts(full_netns, full_stack):
    _exp, api, _prom = full_stack
    ns = full_netns
    gmax = ns.count()
    sel = f'netns="{ns.name}"'
    wait_for(lambda: query(api, f"ctdoctor_conntrack_entries{{{sel}}} == {gmax}"), 30,
             "Prometheus to scrape the full netns")
    before = query(api, f"ctdoctor_conntrack_stat_drop_total{{{sel}}}")
    drop_new_connections(ns)  # SYNs to 127.0.0.1 inside the netns: dropped, the table is full
    wait_for(lambda: query(api, f"increase(ctdoctor_conntrack_stat_drop_total{{{sel}}}[30s]) > 0"), 30,
             "the drops in Prometheus")
    assert before and float(before[0]["value"][1]) >= 0
    # the kernel (6.18+) names the netns in its log line: counted for it by name
    wait_for(lambda: query(api, f"ctdoctor_kernel_log_table_full_total{{{sel}}} > 0"), 30,
             "the table-full kernel log lines of the netns")
    wait_for(lambda: query(api, f'ctdoctor_finding{{code="CT001",severity="critical",{sel}}} == 1'), 30,
             "the doctor's CT001 finding")
    # every alert rule's expression over this netns: the table-full ones are true, the quiet ones are not
    import yaml

    rules = {r["alert"]: r["expr"] for g in yaml.safe_load((CONTRIB / "prometheus" / "ctdoctor.rules.yml")
                                                           .read_text())["groups"] for r in g["rules"]}
    firing = {name for name, expr in rules.items()
              if any(s["metric"].get("netns") == ns.name for s in query(api, expr))}
    assert {"CtdoctorConntrackTableFull", "CtdoctorConntrackDropping"} <= firing, firing
    # one incident, not seven: the warning gives way to the critical fill alert, the doctor's CT001 and
    # CT018 page through the counters, and a full table is no insert clash
    assert not firing & {"CtdoctorConntrackTableNearlyFull", "CtdoctorConntrackInsertClash"}, firing
    assert "CtdoctorConntrackEarlyDropStorm" not in firing  # ASSURED entries: nothing to evict
    assert not query(api, rules["CtdoctorExporterDown"])
    assert not query(api, rules["CtdoctorExporterStale"])
    # Prometheus loaded the rules and evaluates them without errors
    groups = json.loads(get(f"{api}/rules"))["data"]["groups"]
    assert {r["name"] for g in groups for r in g["rules"]} == set(rules)
    assert all(r["health"] != "err" for g in groups for r in g["rules"]), groups


def test_every_dashboard_query_parses_and_returns_data(full_netns, full_stack):
    _exp, api, _prom = full_stack
    wait_for(lambda: query(api, f'ctdoctor_conntrack_entries_by_state{{netns="{full_netns.name}"}}'), 30,
             "the refresh's state breakdown")
    drop_new_connections(full_netns)
    dash = json.loads((CONTRIB / "grafana" / "ctdoctor.json").read_text())

    def empty_panels() -> list[str]:
        empty = []
        for panel in dash["panels"]:
            for t in panel["targets"]:
                expr = (t["expr"].replace("$__rate_interval", "30s").replace("$instance", ".*")
                        .replace("$netns", ".*"))
                assert "$" not in expr, expr
                if not query(api, expr):
                    empty.append(f"{panel['title']}: {expr}")
        return empty

    # rates have data after two scrapes that follow the drops: waited for, however slow the host
    deadline = time.monotonic() + 30
    while (empty := empty_panels()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not empty, empty
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            m = re.match(r"label_values\((.*), (\w+)\)$", var["definition"])
            series, label = m.group(1).replace("$instance", ".*"), m.group(2)
            doc = json.loads(get(f"{api}/label/{label}/values?" + urllib.parse.urlencode({"match[]": series})))
            assert doc["data"], var["name"]


def test_two_hundred_concurrent_scrapes_all_succeed(full_netns, full_stack):
    exp, _api, _prom = full_stack
    n = 200
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def scrape(i):
        barrier.wait()
        try:
            body = get(exp.url, timeout=30)
            results[i] = f'netns="{full_netns.name}"' in body.decode()
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=scrape, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    failed = [r for r in results if r is not True]
    assert not failed, failed[:3]
    assert exp.proc.poll() is None


def test_textfile_once_for_node_exporters_textfile_collector(full_netns, tmp_path):
    p = subprocess.run([sys.executable, "-m", "ctdoctor", "exporter", "--textfile", str(tmp_path), "--once"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ctdoctor.prom"]
    ne_port = free_port()
    with Server([tool("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{ne_port}",
                 "--collector.disable-defaults", "--collector.textfile",
                 f"--collector.textfile.directory={tmp_path}"], f"http://127.0.0.1:{ne_port}/metrics") as ne:
        m = metrics(ne.url)
    # node_exporter took the file whole (no parse error) and serves the full netns from it
    assert value(m, "node_textfile_scrape_error") == 0
    assert value(m, "ctdoctor_conntrack_entries", netns=full_netns.name) == full_netns.count()
    assert value(m, "ctdoctor_conntrack_entries_by_state", netns=full_netns.name, proto="tcp",
                 state="ESTABLISHED") == full_netns.count()


def test_unprivileged_it_serves_what_it_can_see_and_says_what_it_cannot():
    port = free_port()
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "ctdoctor",
            "exporter", "--listen", f"127.0.0.1:{port}", "--refresh", "1"]
    with Server(argv, f"http://127.0.0.1:{port}/metrics", env={**os.environ, "HOME": "/"}) as exp:
        m = metrics(exp.url)
        # more refresh rounds: a failing refresh is reported once, not every round
        wait_for(lambda: (value(metrics(exp.url), "ctdoctor_exporter_refreshes_total") or 0) >= 3, 60,
                 "three refresh rounds")
        out = exp.output()
    assert value(m, "ctdoctor_conntrack_entries", netns="init") is not None
    assert value(m, "ctdoctor_conntrack_entries_limit", netns="init") > 0
    assert value(m, "ctdoctor_exporter_kernel_log_readable") == 0
    assert "not root" in out and "Traceback" not in out
    assert out.count("refresh failed") <= 1


def test_textfile_loop_rewrites_the_file_and_stops_cleanly(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "ctdoctor", "exporter", "--textfile", str(tmp_path), "--refresh", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    target = tmp_path / "ctdoctor.prom"
    try:
        first = wait_for(lambda: target.exists() and target.stat().st_mtime_ns, 60, "the first textfile")
        wait_for(lambda: target.stat().st_mtime_ns != first, 30, "the textfile to be rewritten")
        got = {(x.name, tuple(sorted(x.labels.items()))): x.value
               for fam in text_string_to_metric_families(target.read_text()) for x in fam.samples}
        assert ("ctdoctor_conntrack_entries", (("netns", "init"),)) in got
        assert got[("ctdoctor_exporter_refreshes_total", ())] >= 1  # each write follows a refresh
    finally:
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=15)
    assert b"Traceback" not in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ctdoctor.prom"]  # no temp file left behind


def test_textfile_loop_keeps_running_through_write_errors_and_says_so_once(tmp_path):
    target = tmp_path / "ctdoctor.prom"
    target.mkdir()  # a folder where the file goes: every rename fails, as on a full or broken disk
    (target / "x").write_text("x")
    log = tmp_path.parent / f"{tmp_path.name}.log"
    with open(log, "wb") as errf:
        p = subprocess.Popen([sys.executable, "-m", "ctdoctor", "exporter", "--textfile", str(tmp_path),
                              "--refresh", "1"], stdout=subprocess.DEVNULL, stderr=errf)
        try:
            wait_for(lambda: b"cannot write" in log.read_bytes(), 60, "the write error")
            time.sleep(2.5)  # two more failing rounds: said once, and the loop goes on
            assert p.poll() is None
            assert log.read_bytes().count(b"cannot write") == 1
            shutil.rmtree(target)
            wait_for(target.is_file, 30, "the file once the folder is gone")
            wait_for(lambda: b"written again" in log.read_bytes(), 10, "the recovery line")
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(15)
    assert b"Traceback" not in log.read_bytes()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ctdoctor.prom"]


UPSTREAM = Path(__file__).parent.parent / "data" / "upstream-rules"


def test_compat_node_names_match_node_exporter_and_published_rules_see_every_netns(full_netns):
    """--compat node: node_exporter's own names, help and types, with a netns label; node-mixin's and
    awesome-prometheus-alerts' conntrack rules (verbatim, tests/data/upstream-rules) loaded into a real
    Prometheus that scrapes it as job "node" fire for the full netns, not only for the host."""
    import yaml

    ne_port = free_port()
    ne = Server([tool("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{ne_port}",
                 "--collector.disable-defaults", "--collector.conntrack", "--collector.uname"],
                f"http://127.0.0.1:{ne_port}/metrics")
    prom_bin = tool("prometheus")
    with ne, exporter("--compat", "node", "--discover", "1") as exp:
        theirs = {f.name: (f.type, f.documentation) for f in text_string_to_metric_families(get(ne.url).decode())
                  if f.name.startswith(("node_nf_conntrack", "node_uname"))}
        ours_fams = list(text_string_to_metric_families(get(exp.url).decode()))
        ours = {f.name: (f.type, f.documentation) for f in ours_fams if f.name.startswith("node_")}
        assert len(theirs) == 11 and ours == theirs  # every name, with its type and help
        full = next(f for f in ours_fams if f.name == "node_nf_conntrack_entries")
        assert {s.labels["netns"] for s in full.samples} >= {"init", full_netns.name}

        port = free_port()
        with tempfile.TemporaryDirectory(prefix="ctd-prom-") as tmp:
            target = urllib.parse.urlparse(exp.url).netloc
            files = [str(p) for p in sorted(UPSTREAM.glob("*.yml"))]
            (Path(tmp) / "prometheus.yml").write_text(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                f"rule_files: {json.dumps(files)}\n"
                "scrape_configs:\n"
                f"  - job_name: node\n    static_configs: [{{targets: ['{target}']}}]\n")
            with Server([prom_bin, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
                         f"--web.listen-address=127.0.0.1:{port}"], f"http://127.0.0.1:{port}/-/ready"):
                api = f"http://127.0.0.1:{port}/api/v1"
                sel = f'netns="{full_netns.name}"'
                wait_for(lambda: query(api, f"node_nf_conntrack_entries{{{sel}}} > 0"), 30, "the scrape")
                exprs = {r["alert"]: r["expr"] for f in files for g in yaml.safe_load(Path(f).read_text())["groups"]
                         for r in g["rules"]}
                assert len(exprs) == 3
                for name, expr in exprs.items():
                    got = query(api, expr)
                    # other namespaces of a busy host may be full too (their alerts fire as well); the host's
                    # own table is not, and the full netns's alert fires by its name
                    fired = {s["metric"].get("netns") for s in got}
                    assert full_netns.name in fired and "init" not in fired, (name, got)
                groups = json.loads(get(f"{api}/rules"))["data"]["groups"]
                assert all(r["health"] != "err" for g in groups for r in g["rules"]), groups
