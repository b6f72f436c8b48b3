"""The exporter without the kernel: rendering, the kernel log follower, the textfile, the CLI's edges."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ctdoctor.model.samples import Sample
from ctdoctor.monitor.metrics import Exposition, Refreshed, render, render_text
from ctdoctor.monitor.server import parse_listen, write_textfile
from ctdoctor.sources.live import KernelLogFollower, parse_kmsg_record, parse_wanted
from ctdoctor.sources.stats import parse_proc_stat
from tests.conftest import assert_one_line_error, run_cli

DATA = Path(__file__).parent.parent / "data"
CONTRIB = Path(__file__).parent.parent.parent / "contrib"


def samples_of(body: bytes) -> dict:
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def exposition(**kw) -> Exposition:
    stats_618 = parse_proc_stat((DATA / "proc_stat_nf_conntrack_6.18").read_text()).sums
    base = {
        "samples": [Sample("init", 4026531840, "pid 1", count=120, stats=stats_618),
                 Sample("pod-a", 4026532177, "pause:812 container 3f2a", count=262144, stats={"drop": 17, "clashres": 3}),
                 Sample("pid:999", 4026532300, "sleep:999", readable=False, error="needs root")],
        "limit": 262144, "buckets": 65536,
        "refreshed": Refreshed(at=1700000000.0, duration=0.25, ok=True,
                            by_state={"pod-a": [("tcp", "ESTABLISHED", 262000), ("udp", "UNREPLIED", 144)],
                                      "gone-ns": [("tcp", "TIME_WAIT", 5)]},
                            findings=[("CT001", "critical", "pod-a"), ("CT018", "warning", "pod-a"),
                                      ("CT002", "critical", "gone-ns")]),
        "table_full": {"pod-a": 42, "unattributed": 3}, "kernel_log_readable": True, "refreshes": 4, "refresh_failures": 1}
    base.update(kw)
    return Exposition(**base)


def test_a_quiet_netns_costs_a_few_series_a_busy_one_all():
    stats_618 = parse_proc_stat((DATA / "proc_stat_nf_conntrack_6.18").read_text()).sums
    quiet = Sample("pod-q", 4026532400, "pause:900", count=12, stats=dict(stats_618, drop=0, insert_failed=0,
                                                                          early_drop=0))
    busy = Sample("pod-b", 4026532401, "pause:901", count=140000, stats=dict(stats_618))
    dropping = Sample("pod-d", 4026532402, "pause:902", count=30, stats=dict(stats_618, drop=5))
    refreshed = Refreshed(at=1.0, ok=True, by_state={n: [("tcp", "ESTABLISHED", 10)] for n in ("pod-q", "pod-b")})
    x = exposition(samples=[quiet, busy, dropping], refreshed=refreshed, table_full={})

    def series(ex, netns):
        return {k for k in samples_of(render_text(ex)) if ("netns", netns) in k[1]}

    q = series(x, "pod-q")
    names = {k[0] for k in q}
    # entries, limit, the three drop counters, the info and readable series: nothing else
    assert names == {"ctdoctor_conntrack_entries", "ctdoctor_conntrack_entries_limit",
                     "ctdoctor_conntrack_stat_drop_total", "ctdoctor_conntrack_stat_early_drop_total",
                     "ctdoctor_conntrack_stat_insert_failed_total", "ctdoctor_netns_info",
                     "ctdoctor_exporter_netns_readable"}, names
    b, d = series(x, "pod-b"), series(x, "pod-d")
    assert len(b) > 15 and ("ctdoctor_conntrack_entries_by_state", (("netns", "pod-b"), ("proto", "tcp"),
                                                                     ("state", "ESTABLISHED"))) in b
    assert len(d) > 15  # it dropped: every stat, to see why
    assert len(series(exposition(samples=[quiet], refreshed=refreshed, table_full={}, detail="all"), "pod-q")) > 15


def test_every_contract_metric_is_rendered_with_its_netns():
    got = samples_of(render_text(exposition()))
    assert got[("ctdoctor_conntrack_entries", (("netns", "pod-a"),))] == 262144
    assert got[("ctdoctor_conntrack_entries", (("netns", "init"),))] == 120
    # the global limit repeated per netns, so entries / entries_limit matches by label
    assert got[("ctdoctor_conntrack_entries_limit", (("netns", "pod-a"),))] == 262144
    assert got[("ctdoctor_conntrack_entries_limit", (("netns", "init"),))] == 262144
    assert got[("ctdoctor_conntrack_buckets", ())] == 65536
    assert got[("ctdoctor_conntrack_stat_drop_total", (("netns", "pod-a"),))] == 17
    # 5.10+ "clashres" column is the clash_resolve counter
    assert got[("ctdoctor_conntrack_stat_clash_resolve_total", (("netns", "pod-a"),))] == 3
    assert got[("ctdoctor_conntrack_entries_by_state", (("netns", "pod-a"), ("proto", "tcp"),
                                                        ("state", "ESTABLISHED")))] == 262000
    assert got[("ctdoctor_finding", (("code", "CT001"), ("netns", "pod-a"), ("severity", "critical")))] == 1
    assert got[("ctdoctor_kernel_log_table_full_total", (("netns", "pod-a"),))] == 42
    assert got[("ctdoctor_netns_info", (("container", ""), ("inode", "4026532177"), ("namespace", ""),
                                       ("netns", "pod-a"), ("owner", "pause:812 container 3f2a"), ("pod", "")))] == 1
    assert got[("ctdoctor_exporter_refresh_duration_seconds", ())] == 0.25
    assert got[("ctdoctor_exporter_last_refresh_timestamp_seconds", ())] == 1700000000.0
    assert got[("ctdoctor_exporter_refresh_failures_total", ())] == 1


def test_init_stats_are_the_proc_file_summed_over_cpus():
    text = (DATA / "proc_stat_nf_conntrack_6.18").read_text()
    st = parse_proc_stat(text)
    got = samples_of(render_text(exposition()))
    for col, v in st.sums.items():
        name = {"clashres": "clash_resolve", "chainlength": "chaintoolong"}.get(col, col)
        assert got[(f"ctdoctor_conntrack_stat_{name}_total", (("netns", "init"),))] == v
    assert ("ctdoctor_conntrack_stat_entries_total", (("netns", "init"),)) not in got  # a gauge, not summed


def test_unreadable_and_gone_namespaces():
    got = samples_of(render_text(exposition()))
    # a netns we cannot enter: listed, marked unreadable, no made-up zero count
    assert got[("ctdoctor_exporter_netns_readable", (("netns", "pid:999"),))] == 0
    assert ("ctdoctor_conntrack_entries", (("netns", "pid:999"),)) not in got
    # a netns gone since the last refresh: its state and finding series are not served
    assert not [k for k in got if ("netns", "gone-ns") in k[1]]


def test_never_refreshed_has_no_stale_timestamp():
    got = samples_of(render_text(exposition(refreshed=Refreshed())))
    assert ("ctdoctor_exporter_last_refresh_timestamp_seconds", ()) not in got
    assert got[("ctdoctor_exporter_refresh_success", ())] == 0
    assert not [k for k in got if k[0] in ("ctdoctor_conntrack_entries_by_state", "ctdoctor_finding")]


def test_openmetrics_when_asked():
    body, ctype = render(exposition(), "application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    body, ctype = render(exposition(), "")
    assert ctype.startswith("text/plain") and b"# EOF" not in body


def test_label_values_are_escaped():
    s = Sample('we"ird\\ns\n', 1, 'own"er', count=1, stats={})
    body = render_text(exposition(samples=[s]))
    got = samples_of(body)
    assert got[("ctdoctor_conntrack_entries", (("netns", 'we"ird\\ns\n'),))] == 1


# ---- the kernel log follower ---------------------------------------------------------------------


class FakeReader:
    def __init__(self, known: dict[int, tuple[str, float]]):
        self.known = known
        self.rediscovered = 0

    def name_of(self, inode, mono=None):
        got = self.known.get(inode)
        if got is None or (mono is not None and mono < got[1] - 2):
            return None
        return got[0]

    def rediscover(self):
        self.rediscovered += 1

    def rediscover_soon(self):
        self.rediscover()


def rec(usec: int, msg: str) -> bytes:
    return f"4,{usec // 1000},{usec},-;{msg}\n SUBSYSTEM=net\n".encode()


def test_kmsg_record_format():
    assert parse_kmsg_record(b"6,339,5140900,-;nf_conntrack: hello\n") == (5.1409, "nf_conntrack: hello")
    assert parse_kmsg_record(b"garbage") is None
    assert parse_kmsg_record(b"6,1,notanumber,-;x") is None


def test_follower_attributes_by_inode_and_birth():
    reader = FakeReader({4026532177: ("pod-a", 100.0)})
    f = KernelLogFollower(reader, names_init=True)
    f.take(rec(150_000_000, "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet"), live=True)
    f.take(rec(151_000_000, "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet"), live=True)
    # the same inode before pod-a existed: an earlier namespace's line (inodes are reused)
    f.take(rec(10_000_000, "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet"), live=False)
    # 6.18 prints no inode for init
    f.take(rec(160_000_000, "nf_conntrack: nf_conntrack: table full, dropping packet"), live=True)
    f.take(rec(161_000_000, "nf_conntrack: expectation table full"), live=True)
    assert f.by_name() == {"pod-a": 2, "unknown": 1, "init": 1}
    assert reader.rediscovered == 0


def test_follower_unknown_inode_triggers_discovery():
    reader = FakeReader({})

    class Late(FakeReader):
        def rediscover(self):
            self.known[4026532999] = ("new-pod", 0.0)

    reader = Late({})
    f = KernelLogFollower(reader, names_init=True)
    f.take(rec(5_000_000, "nf_conntrack: nf_conntrack: table full in netns 4026532999, dropping packet"), live=True)
    assert f.by_name() == {"new-pod": 1}


def test_follower_old_kernel_infers_only_when_one_netns_is_full():
    f = KernelLogFollower(FakeReader({}), names_init=False)
    f.take(rec(1, "nf_conntrack: table full, dropping packet."), live=False)  # history: who knows
    f.set_full_now(["pod-a"])
    f.take(rec(2, "nf_conntrack: nf_conntrack: table full, dropping packet"), live=True)
    f.set_full_now(["pod-a", "pod-b"])
    f.take(rec(3, "nf_conntrack: nf_conntrack: table full, dropping packet"), live=True)
    assert f.by_name() == {"unattributed": 2, "pod-a": 1}


def test_follower_reads_a_kmsg_like_stream(tmp_path):
    # /dev/kmsg returns one record per read(); a FIFO-free stand-in: a pipe with records written in
    r, w = os.pipe()
    os.write(w, rec(1_000_000, "nf_conntrack: nf_conntrack: table full, dropping packet"))
    os.close(w)
    f = KernelLogFollower(FakeReader({}), names_init=True)
    os.set_blocking(r, False)
    f.drain(r, live=False)
    os.close(r)
    assert f.by_name() == {"init": 1}


def test_follower_without_permission_says_why(tmp_path):
    f = KernelLogFollower(FakeReader({}), names_init=True, path=str(tmp_path / "no-kmsg"))
    f.read_once()
    assert f.readable is False and "no-kmsg" in f.error


# ---- small parsers and the textfile ------------------------------------------------------------------


def test_compat_node_adds_node_exporters_names_within_the_series_budget():
    from ctdoctor.monitor.metrics import NODE_STATS, ServerStats, render

    stats_618 = parse_proc_stat((DATA / "proc_stat_nf_conntrack_6.18").read_text()).sums
    quiet = Sample("pod-q", 4026532400, "pause:900", count=12, stats=dict(stats_618, drop=0, insert_failed=0,
                                                                          early_drop=0))
    busy = Sample("pod-b", 4026532401, "pause:901", count=140000, stats=dict(stats_618))
    x = exposition(samples=[quiet, busy], compat="node", server=ServerStats())
    got = samples_of(render(x)[0])

    def node(netns):
        return {k[0] for k in got if k[0].startswith("node_nf") and ("netns", netns) in k[1]}

    assert node("pod-b") == {"node_nf_conntrack_entries", "node_nf_conntrack_entries_limit"} | {
        f"node_nf_conntrack_stat_{k}" for k in NODE_STATS}
    assert node("pod-q") == {"node_nf_conntrack_entries", "node_nf_conntrack_entries_limit", "node_nf_conntrack_stat_drop",
                             "node_nf_conntrack_stat_early_drop", "node_nf_conntrack_stat_insert_failed"}
    assert got[("node_nf_conntrack_entries", (("netns", "pod-b"),))] == 140000
    assert sum(1 for k in got if k[0] == "node_uname_info") == 1
    assert not any(k[0].startswith("node_") for k in samples_of(render(exposition(samples=[busy]))[0]))
    x.detail = "all"
    assert len(node("pod-q")) < len({k[0] for k in samples_of(render(x)[0]) if k[0].startswith("node_nf")
                                     and ("netns", "pod-q") in k[1]})


@pytest.mark.parametrize("text,want", [
    ("127.0.0.1:9718", ("127.0.0.1", 9718)), (":9718", ("", 9718)), ("9718", ("", 9718)),
    ("[::1]:9718", ("::1", 9718)), ("localhost:80", ("localhost", 80))])
def test_listen_forms(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["127.0.0.1:0", "127.0.0.1:99999", "host.example:80", "[::1]9718", "1.2.3.4:"])
def test_listen_errors(text):
    from ctdoctor.errors import UsageError

    with pytest.raises(UsageError):
        parse_listen(text)


def test_wanted_forms():
    assert parse_wanted(None) is None and parse_wanted("all") is None
    assert parse_wanted("init, ns1,,pid:4") == ["init", "ns1", "pid:4"]


def test_textfile_is_replaced_atomically_and_readable(tmp_path):
    old = tmp_path / "ctdoctor.prom"
    old.write_text("old\n")
    os.chmod(old, 0o600)
    path = write_textfile(str(tmp_path), render_text(exposition()))
    assert path == str(old)
    assert b"ctdoctor_conntrack_entries" in old.read_bytes()
    assert oct(os.stat(old).st_mode & 0o777) == "0o644"  # node_exporter runs as another user
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctdoctor.prom"]  # no temp file left


def test_textfile_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    import errno

    from ctdoctor.errors import Failure

    target = tmp_path / "ctdoctor.prom"
    target.write_text("old\n")

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(Failure, match=r"cannot write .*ctdoctor\.prom: No space left on device"):
        write_textfile(str(tmp_path), b"new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctdoctor.prom"]


def test_textfile_temp_names_are_random_and_never_follow_a_planted_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    d = tmp_path / "tf"
    d.mkdir()
    for name in (f".ctdoctor.prom.{os.getpid()}.tmp", ".ctdoctor.prom.tmp", "ctdoctor.prom.tmp"):
        os.symlink(victim, d / name)  # what a predictable name would have followed
    write_textfile(str(d), b"new\n")
    assert victim.read_text() == "precious\n" and (d / "ctdoctor.prom").read_text() == "new\n"


@pytest.mark.parametrize("argv,contains", [
    (["exporter", "--once"], "--once goes with --textfile"),
    (["exporter", "--refresh", "0"], "--refresh"),
    (["exporter", "--refresh", "nan"], "--refresh"),
    (["exporter", "--listen", "1.2.3.4:99999"], "1..65535"),
    (["exporter", "--textfile", "/nonexistent/dir", "--once"], "not a directory"),
    (["exporter", "--textfile", "/tmp", "--listen", "127.0.0.1:1"], "leave out --web.listen-address"),
    (["exporter", "--web.listen-address", "[::1]9718"], "use [ADDRESS]:PORT"),
    (["exporter", "--web.telemetry-path", "metrics"], "a path such as /metrics"),
    (["exporter", "--web.config.file", "/nonexistent/web.yml"], "No such file"),
    (["exporter", "--web.max-requests", "0"], "--web.max-requests"),
    (["exporter", "--textfile", "/tmp", "--compat", "node"], "cannot go into node_exporter's textfile"),
    (["exporter", "--compat", "prom"], "--compat"),
    (["--format", "json", "exporter"], "--format"),
])
def test_cli_edges_are_one_line(argv, contains):
    rc, _out, err = run_cli(*argv, timeout=30)
    assert_one_line_error(rc, err, code=2, contains=contains)


def test_exporter_refuses_a_host_image():
    rc, _out, err = run_cli("--root", str(Path(__file__).parent.parent / "images" / "rhel7_full"), "exporter",
                           timeout=30)
    assert rc != 0 and "running kernel" in err and len(err.strip().splitlines()) == 1


# ---- contrib: rules, dashboard, deployment -------------------------------------------------------


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: `make test` installs the Debian package prometheus")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return tool


def test_rules_pass_promtool_check():
    p = subprocess.run([_promtool(), "check", "rules", str(CONTRIB / "prometheus" / "ctdoctor.rules.yml")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 9 rules found" in p.stdout


def test_rules_unit_tests_fire_and_stay_quiet():
    p = subprocess.run([_promtool(), "test", "rules", "ctdoctor.rules.test.yml"], capture_output=True, text=True,
                       cwd=CONTRIB / "prometheus")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_rules_unit_tests_catch_a_broken_rule(tmp_path):
    """The promtool tests are real: a rule with a wrong threshold makes them fail."""
    shutil.copy(CONTRIB / "prometheus" / "ctdoctor.rules.test.yml", tmp_path)
    text = (CONTRIB / "prometheus" / "ctdoctor.rules.yml").read_text()
    (tmp_path / "ctdoctor.rules.yml").write_text(text.replace(">= 0.95", ">= 0.999", 1))
    p = subprocess.run([_promtool(), "test", "rules", "ctdoctor.rules.test.yml"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode != 0 and "CtdoctorConntrackTableFull" in p.stdout + p.stderr


def test_every_alert_has_severity_netns_and_a_fix():
    import yaml

    rules = yaml.safe_load((CONTRIB / "prometheus" / "ctdoctor.rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 9
    for a in alerts:
        assert a["labels"]["severity"] in ("warning", "critical"), a["alert"]
        # netns comes from the series, or is set on exporter-wide alerts
        assert "netns" in a["labels"] or "ctdoctor_" in a["expr"], a["alert"]
        text = a["annotations"]["summary"] + a["annotations"]["description"]
        assert "netns" in a["annotations"]["summary"] or a["labels"].get("netns") == "all", a["alert"]
        assert "`ctdoctor" in a["annotations"]["description"] or "systemctl" in text or "log" in text, a["alert"]


def test_prometheusrule_manifest_carries_the_same_rules():
    import yaml

    rules = yaml.safe_load((CONTRIB / "prometheus" / "ctdoctor.rules.yml").read_text())
    pr = yaml.safe_load((CONTRIB / "kubernetes" / "prometheusrule.yaml").read_text())
    assert pr["kind"] == "PrometheusRule" and pr["spec"]["groups"] == rules["groups"]


def test_kubernetes_manifests_use_the_documented_flags_and_port():
    import yaml

    from ctdoctor.monitor.server import DEFAULT_PORT

    docs = [d for d in yaml.safe_load_all((CONTRIB / "kubernetes" / "ctdoctor-exporter.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) >= {"DaemonSet", "Service", "ServiceMonitor"}
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    c = pod["containers"][0]
    assert c["args"][0] == "exporter"
    assert c["ports"][0]["containerPort"] == DEFAULT_PORT
    assert kinds["Service"]["spec"]["ports"][0]["port"] == DEFAULT_PORT
    assert set(c["securityContext"]["capabilities"]["add"]) >= {"SYS_ADMIN", "NET_ADMIN"}
    assert any(v["mountPath"] == "/dev/kmsg" for v in c["volumeMounts"])
    # the job name the exporter alerts match
    assert kinds["ServiceMonitor"]["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert kinds["DaemonSet"]["metadata"]["labels"]["app.kubernetes.io/name"].startswith("ctdoctor")
    # a cluster admits it: hostPID/hostNetwork/hostPath need the privileged Pod Security level
    assert kinds["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    # kube-prometheus-stack finds the monitor and the rules by their release label
    assert kinds["ServiceMonitor"]["metadata"]["labels"]["release"]
    pr = yaml.safe_load((CONTRIB / "kubernetes" / "prometheusrule.yaml").read_text())
    assert pr["metadata"]["labels"]["release"] == kinds["ServiceMonitor"]["metadata"]["labels"]["release"]
    # --host-root is the node's / mounted read-only
    host_root = c["args"][c["args"].index("--host-root") + 1]
    mount = next(v for v in c["volumeMounts"] if v["mountPath"] == host_root)
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] is True and vol["hostPath"]["path"] == "/"
    _flags_are_real(c["args"])


def _flags_are_real(args: list[str]) -> None:
    """Every flag a deployment file passes is one the exporter accepts (its real parser, as main() builds it)."""
    import importlib

    from ctdoctor.commands import parser as cli_parser

    commands = {"exporter": cli_parser.COMMANDS["exporter"]}
    parser = cli_parser.build_parser(commands)
    chosen, argv = cli_parser.choose_command(list(args), commands)
    assert chosen == "exporter"
    importlib.import_module(commands["exporter"][0]).add_arguments(
        parser._subparsers._group_actions[0].choices["exporter"])
    got = parser.parse_args(argv)  # raises SystemExit on any unknown flag
    assert got.refresh > 0


def test_systemd_unit_is_hardened_and_runs_the_exporter():
    import configparser

    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string((CONTRIB / "systemd" / "ctdoctor-exporter.service").read_text())
    svc = cp["Service"]
    assert svc["ExecStart"].split()[1:3] == ["exporter", "--web.listen-address"]
    assert svc["ExecStart"].split()[3].endswith(":9718")
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
    assert "CAP_SYS_ADMIN" in svc["CapabilityBoundingSet"] and "CAP_NET_ADMIN" in svc["CapabilityBoundingSet"]
    assert "AF_NETLINK" in svc["RestrictAddressFamilies"]
    _flags_are_real(svc["ExecStart"].split()[1:])
    if shutil.which("systemd-analyze"):
        p = subprocess.run(["systemd-analyze", "verify", str(CONTRIB / "systemd" / "ctdoctor-exporter.service")],
                           capture_output=True, text=True)
        assert "Unknown key" not in p.stderr and "Unknown section" not in p.stderr, p.stderr


def test_dashboard_is_valid_and_uses_contract_metrics():
    import json
    import re

    dash = json.loads((CONTRIB / "grafana" / "ctdoctor.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 9
    used = set(re.findall(r"ctdoctor_[a-z_]+", " ".join(exprs)))
    assert {"ctdoctor_conntrack_entries", "ctdoctor_conntrack_entries_limit", "ctdoctor_conntrack_stat_drop_total",
            "ctdoctor_conntrack_entries_by_state", "ctdoctor_finding"} <= used
    rendered = samples_of(render_text(exposition()))
    names = {k[0] for k in rendered}
    assert used <= names, used - names  # the dashboard asks only for metrics the exporter serves
    assert {v["name"] for v in dash["templating"]["list"]} >= {"instance", "netns"}


def test_a_port_in_use_is_a_one_line_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc, _out, err = run_cli("exporter", "--listen", f"127.0.0.1:{port}", timeout=30)
    assert_one_line_error(rc, err, code=1, contains=f"cannot listen on 127.0.0.1:{port}")


def test_kmsg_records_never_raise_on_junk():
    from hypothesis import given
    from hypothesis import strategies as st

    real = rec(150_000_000, "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet")

    @given(st.binary(max_size=300), st.integers(0, len(real)), st.binary(max_size=20))
    def check(junk, cut, insert):
        f = KernelLogFollower(FakeReader({4026532177: ("pod-a", 0.0)}), names_init=True)
        for r in (junk, real[:cut] + insert + real[cut:]):
            f.take(r, live=False)
        assert sum(f.counts.values()) <= 2

    check()


def test_every_command_an_alert_prints_runs_as_printed():
    """The backticked ctdoctor commands and the runbook of every alert, for netns init, run on this
    host: none is refused as a usage error or fails with an error."""
    import re

    import yaml

    from tests.conftest import run_cli

    rules = yaml.safe_load((CONTRIB / "prometheus" / "ctdoctor.rules.yml").read_text())
    commands = set()
    for a in (r for g in rules["groups"] for r in g["rules"] if "alert" in r):
        ann = a["annotations"]
        text = " ".join([ann.get("description", ""), f"`{ann['runbook']}`" if "runbook" in ann else ""])
        text = re.sub(r"\{\{ if .*?\}\}|\{\{ end \}\}", "", text)
        text = text.replace("{{ $labels.netns }}", "init").replace("{{ $labels.code }}", "CT005")
        commands |= set(re.findall(r"`(ctdoctor [^`]*)`", text))
    assert len(commands) >= 8, commands
    for cmd in sorted(commands):
        argv = cmd.split()[1:]
        if argv[:1] != ["explain"] and os.geteuid() != 0:
            continue  # the live ones need root; explain runs anywhere
        rc, _out, err = run_cli(*argv, timeout=120)
        assert rc in (0, 1, 2, 3) and "error:" not in err and "usage:" not in err, (cmd, rc, err[-300:])
