"""What a person reading real files concludes, case by case (issue 17), on copies of the real-format
images: rotated and compressed logs, the capture time, boots, 2.6-era modules, keys the kernel does
not have, conntrack-tools footers, NOTRACK in every spelling and CT016 in rule order, built-in
conntrack, Nagios errors and unprivileged runs. Line formats are the kernel's (printk strings) and
the tools' own, as in tests/images and tests/realworld."""

from __future__ import annotations

import gzip
import re
import shutil

import pytest

from ctdoctor.sources import kernlog
from ctdoctor.sources.firewall import parse_iptables_list, parse_iptables_save, parse_nft_text
from ctdoctor.sources.system import parse_date_output, parse_uptime_output
from tests.conftest import run_cli
from tests.unit.test_doctor_images import BASE, NF, RHEL7, doctor, find, ids, image

FULL = "kernel: nf_conntrack: table full, dropping packet"


def test_drops_only_in_a_rotated_log_are_found_and_dated(tmp_path):
    # the on-call reboot: the current messages starts with the boot, the night's drops are in
    # yesterday's rotated file (compressed, as logrotate leaves it)
    root = image(tmp_path, RHEL7, {"var/log/messages": "Nov 21 06:02:11 gw01 kernel: Linux version 3.10.0-1160.el7"
                                   ".x86_64 (mockbuild@x86-vm-26.build.eng.bos.redhat.com)\n"
                                   "Nov 21 06:02:40 gw01 systemd: Started IPv4 firewall with iptables.\n",
                                   "sos_commands/kernel/dmesg": "[    0.000000] Linux version 3.10.0-1160.el7.x86_64\n",
                                   "sos_commands/date/date": "Sat Nov 21 09:30:00 CET 2026\n",
                                   "sos_commands/host/uptime": " 09:30:00 up  3:28,  1 user,  load average: 0.0\n",
                                   NF + "nf_conntrack_count": "1200\n"})
    rotated = "".join(f"Nov 20 03:1{i}:07 gw01 {FULL}\n" for i in range(4)) + \
        "Nov 20 03:14:07 gw01 kernel: printk: 212 messages suppressed.\n"
    (root / "var/log/messages-20261121.gz").write_bytes(gzip.compress(rotated.encode()))
    _rc, doc = doctor(root)
    (f,) = find(doc, "CT002")
    assert f["severity"] == "warning" and "before the last reboot" in f["summary"]
    assert f["evidence"]["when"]["earlier_boots"] == 4 and f["evidence"]["when"]["current_boot"] == 0
    assert ("+212 suppressed" in f["summary"] and "day" in f["summary"]) or "h before" in f["summary"]
    assert "CT001" not in ids(doc)


def test_a_stale_drop_is_history_and_a_fresh_one_pages(tmp_path):
    old = image(tmp_path, RHEL7, {"sos_commands/date/date": "Fri Feb 19 10:00:00 UTC 2027\n",
                                  NF + "nf_conntrack_count": "1200\n", "proc/net/stat/nf_conntrack": None,
                                  "sos_commands/kernel/dmesg": None})
    _rc, doc = doctor(old)
    (f,) = find(doc, "CT002")
    assert f["severity"] == "info" and "days before the capture" in f["summary"]
    shutil.rmtree(tmp_path / "img")
    fresh = image(tmp_path, RHEL7, {"sos_commands/date/date": "Fri Nov 20 03:30:00 UTC 2026\n",
                                    NF + "nf_conntrack_count": "1200\n", "proc/net/stat/nf_conntrack": None,
                                    "sos_commands/kernel/dmesg": None})
    rc, doc = doctor(fresh)
    (f,) = find(doc, "CT002")
    assert f["severity"] == "critical" and rc == 2 and "min before the capture" in f["summary"]


def test_a_corrupt_rotated_log_is_a_note_not_a_crash(tmp_path):
    root = image(tmp_path, RHEL7, {"var/log/kern.log.2.gz": "not gzip at all"})
    rc, doc = doctor(root)
    assert any("kern.log.2.gz" in n for n in doc["notes"]) and rc == 2


def test_ip_conntrack_era_keys_on_a_newer_kernel_are_not_drift(tmp_path):
    # a kube-proxy node (5.4) whose sysctl.conf still carries a 2.6-era tuning line
    conf = "net.ipv4.netfilter.ip_conntrack_max = 65536\nnet.ipv4.netfilter.ip_conntrack_tcp_timeout_established = 600\n"
    root = image(tmp_path, BASE, {"etc/sysctl.d/10-old-tuning.conf": conf})
    _rc, doc = doctor(root)
    assert "CT006" not in ids(doc)
    (f,) = find(doc, "CT020")
    assert f["severity"] == "info" and "net.ipv4.netfilter.ip_conntrack_max=65536" in f["summary"]
    assert f["fix"] == ["sed -i '1s/^/# no such key on this kernel: /' /etc/sysctl.d/10-old-tuning.conf",
                        "sed -i '2s/^/# no such key on this kernel: /' /etc/sysctl.d/10-old-tuning.conf"]


def test_kube_proxy_raised_values_are_information(tmp_path):
    root = image(tmp_path, BASE, {"etc/sysctl.d/90-max.conf": "net.netfilter.nf_conntrack_max = 131072\n"
                                  "net.netfilter.nf_conntrack_tcp_timeout_established = 432000\n",
                                  NF + "nf_conntrack_tcp_timeout_established": "86400\n"})
    _rc, doc = doctor(root)
    (f,) = find(doc, "CT006")
    assert f["severity"] == "info" and f["evidence"]["lost"] == []
    assert f["fix"][0].startswith("ctdoctor apply --max 262144 --timeout tcp_timeout_established=86400")


def test_a_2_6_nat_gateway_on_ip_conntrack_is_not_broken(tmp_path):
    # RHEL 5 lsmod: ip_conntrack + ip_nat + iptable_nat, NAT rules in /etc/sysconfig/iptables
    lsmod = ("Module                  Size  Used by\n"
             "iptable_nat            11205  1 \n"
             "ip_nat                 20973  2 ipt_MASQUERADE,iptable_nat\n"
             "ip_conntrack           53025  4 ipt_MASQUERADE,iptable_nat,ip_nat,xt_state\n"
             "nfnetlink              10713  2 ip_nat,ip_conntrack\n"
             "iptable_filter          7105  1 \n"
             "ip_tables              17029  2 iptable_nat,iptable_filter\n")
    root = image(tmp_path, RHEL7, {"sos_commands/kernel/lsmod": lsmod,
                                   "sos_commands/kernel/uname_-a": "Linux gw01 2.6.18-419.el5 #1 SMP Wed Feb 22 "
                                   "22:40:57 EST 2017 x86_64 x86_64 x86_64 GNU/Linux\n"})
    _rc, doc = doctor(root)
    assert "CT005" not in ids(doc)
    assert not [u for u in doc["unknown"] if u["id"] == "CT005"]
    holders = find(doc, "CT015")
    assert holders and holders[0]["summary"].startswith("ip_conntrack is a loaded module")


def test_built_in_conntrack_has_no_unload_or_reload_hazard(tmp_path):
    # BASE is a 6.18 host with conntrack built in; give it RHEL's unload default and a modprobe trap
    root = image(tmp_path, BASE, {"etc/sysconfig/iptables-config": 'IPTABLES_MODULES_UNLOAD="yes"\n',
                                  "etc/sysctl.d/90-ct.conf": "net.netfilter.nf_conntrack_max = 262144\n",
                                  "etc/modprobe.d/bad.conf": "install nf_conntrack /bin/true\n"})
    rc, doc = doctor(root)
    assert {f["severity"] for f in find(doc, "CT007")} == {"info"}
    assert {f["severity"] for f in find(doc, "CT008")} == {"info"}
    assert rc == 0


def test_notrack_in_iptables_L_output_and_rule_order():
    raw = ("Chain PREROUTING (policy ACCEPT 1804 packets, 139K bytes)\n"
           " pkts bytes target     prot opt in     out     source               destination\n"
           "  612 40212 CT         udp  --  *      *       0.0.0.0/0            0.0.0.0/0            udp dpt:53 NOTRACK\n")
    filt = ("Chain INPUT (policy DROP 0 packets, 0 bytes)\n"
            " pkts bytes target     prot opt in     out     source               destination\n"
            "  612 40212 ACCEPT     udp  --  *      *       0.0.0.0/0            0.0.0.0/0            udp dpt:53\n"
            " 9120  812K ACCEPT     all  --  *      *       0.0.0.0/0            0.0.0.0/0            ctstate RELATED,ESTABLISHED\n")
    from ctdoctor.diagnose.checks.ct016_notrack_accept import _dropped_notracks

    r = parse_iptables_list(raw, "sos_commands/firewall_tables/iptables_-t_raw_-nvL")
    assert r.notrack and r.rules[0].action == "notrack" and r.rules[0].dports == frozenset({53})
    r.merge(parse_iptables_list(filt, "sos_commands/firewall_tables/iptables_-vnxL"))
    assert _dropped_notracks(r) == []  # the explicit port accept comes first
    r2 = parse_iptables_list(raw, "sos_commands/firewall_tables/iptables_-t_raw_-nvL")
    r2.merge(parse_iptables_list(filt.replace("udp dpt:53\n", "udp dpt:5353\n"),
                                 "sos_commands/firewall_tables/iptables_-vnxL"))
    assert _dropped_notracks(r2) == ["udp/53"]
    # a rate-limited accept does not surely accept, a drop after the accept does not matter
    nft = ("table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n"
           "\t\tct state established,related accept\n\t\tudp dport 53 limit rate 10/second accept\n\t}\n}\n"
           "table inet raw {\n\tchain pre {\n\t\ttype filter hook prerouting priority raw; policy accept;\n"
           "\t\tudp dport 53 notrack\n\t}\n}\n")
    assert _dropped_notracks(parse_nft_text(nft, "nft")) == ["udp/53"]
    save = ("*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp -m udp --dport 53 -j CT --notrack\nCOMMIT\n"
            "*filter\n:INPUT DROP [0:0]\n-A INPUT -p udp -m udp --dport 53 -j ACCEPT\n"
            "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n")
    assert _dropped_notracks(parse_iptables_save(save, "s")) == []


def test_ct016_fix_speaks_the_hosts_firewall(tmp_path):
    save = ("*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp -m udp --dport 53 -j NOTRACK\nCOMMIT\n"
            "*filter\n:INPUT DROP [0:0]\n-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n")
    root = image(tmp_path, RHEL7, {"etc/sysconfig/iptables": save})
    _rc, doc = doctor(root)
    (f,) = find(doc, "CT016")
    assert f["fix"] == ["iptables -I INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT"]
    assert f["evidence"]["dropped"] == ["udp/53"]


def test_an_ipv4_only_listing_is_not_compared_with_the_count(tmp_path):
    # conntrack-tools 1.4.4 lists IPv4 only without -f; its footer says so
    lines = "".join(f"tcp      6 431999 ESTABLISHED src=10.0.0.{i} dst=10.0.1.1 sport=4{i:04d} dport=443 "
                    f"src=10.0.1.1 dst=10.0.0.{i} sport=443 dport=4{i:04d} [ASSURED] mark=0 use=1\n" for i in range(50))
    root = image(tmp_path, BASE, {"proc/net/nf_conntrack": None, NF + "nf_conntrack_count": "900\n",
                                  "sos_commands/conntrack/conntrack_-L_-o_extended": lines.replace("tcp  ", "ipv4     2 tcp  ")
                                  + "conntrack v1.4.4 (conntrack-tools): 50 flow entries have been shown.\n"})
    _rc, doc = doctor(root)
    assert "CT004" not in ids(doc)
    (u,) = [u for u in doc["unknown"] if u["id"] == "CT004"]
    assert "ipv4 only" in u["reason"] and "conntrack-tools 1.4.4" in u["reason"]


def test_a_listing_cut_below_its_footer_is_a_sample(tmp_path):
    lines = "".join(f"ipv4     2 udp      17 20 src=10.0.0.{i} dst=10.0.1.1 sport=5{i:04d} dport=53 "
                    f"src=10.0.1.1 dst=10.0.0.{i} sport=53 dport=5{i:04d} mark=0 use=1\n" for i in range(30))
    root = image(tmp_path, BASE, {"proc/net/nf_conntrack": None, NF + "nf_conntrack_count": "1498\n",
                                  "sos_commands/conntrack/conntrack_-L_-o_extended": lines
                                  + "conntrack v1.4.5 (conntrack-tools): 1498 flow entries have been shown.\n"})
    _rc, doc = doctor(root)
    assert "CT004" not in ids(doc) and any("read as a sample" in n for n in doc["notes"])


def test_fill_thresholds_are_one_setting(tmp_path):
    root = image(tmp_path, BASE, {NF + "nf_conntrack_count": str(int(262144 * 0.85))})
    _rc, doc = doctor(root)
    assert find(doc, "CT001")[0]["severity"] == "warning"
    _rc, out, _ = run_cli("--root", str(root), "--format", "json", env={"CTDOCTOR_FILL_WARNING": "0.9"})
    assert '"CT001"' not in out  # CT004 still sees the count above the (empty) listing
    # the shipped alert rules carry the same two numbers
    import re

    from ctdoctor.model.thresholds import DEFAULT_FILL_CRITICAL, DEFAULT_FILL_WARNING

    for rel in ("contrib/prometheus/ctdoctor.rules.yml", "contrib/kubernetes/prometheusrule.yaml"):
        rules = (RHEL7.parent.parent.parent / rel).read_text()
        near = re.search(r"alert: CtdoctorConntrackTableNearlyFull\s+(?:#.*\s+)?expr: .*?entries_limit > 0\) >=? "
                         r"([\d.]+) < ([\d.]+)", rules)
        full = re.search(r"alert: CtdoctorConntrackTableFull\s+expr: .*?entries_limit > 0\) >=? ([\d.]+)", rules)
        assert near and full, rel
        assert (float(near.group(1)), float(full.group(1))) == (DEFAULT_FILL_WARNING, DEFAULT_FILL_CRITICAL), rel
        assert float(near.group(2)) == DEFAULT_FILL_CRITICAL, rel  # the warning ends where the critical begins


def test_nagios_errors_are_unknown_with_a_status_line(tmp_path):
    rc, out, _err = run_cli("--root", str(tmp_path / "missing"), "--format", "nagios")
    assert rc == 3 and out.startswith("CONNTRACK UNKNOWN - --root ") and out[-1] == "\n" and out.count("\n") == 1
    rc, out, _err = run_cli("--format", "nagios", "--only", "CT999", "--root", str(BASE))
    assert rc == 3 and out.startswith("CONNTRACK UNKNOWN - unknown check code")


def test_unprivileged_nagios_run_is_unknown_not_ok():
    rc, out, err = run_cli("--format", "nagios", "--interval", "0", as_nobody=True)
    assert "Traceback" not in err
    line = out.strip()
    assert rc == 3 and line.startswith("CONNTRACK UNKNOWN - not run as root: "), (rc, out, err)
    assert "skipped" in line and "'count_init'=" in line


def test_kernel_log_parsers_on_real_line_shapes():
    text = ("Sat Sep  9 16:28:18 2017 kern.warn kernel: [65503.710000] nf_conntrack: table full, dropping packet\n"
            "Sep  9 16:28:19 host kernel: NET: 37 messages suppressed\n"
            "-- Reboot --\n"
            "Sep 10 01:00:00 host kernel: Linux version 2.6.32-754.el6.x86_64\n")
    evs = kernlog.parse_kernel_log(text, "/var/log/messages", year_ref=parse_date_output("Mon Sep 11 00:00:00 UTC 2017"))
    kinds = [e.kind for e in evs]
    assert kinds == ["table_full", "suppressed", "boot", "boot"]
    assert evs[0].at == parse_date_output("Sat Sep  9 16:28:18 UTC 2017") and evs[0].suppressed_after == 37
    kernlog.assign_boots(evs, None)
    assert evs[0].boot == -1 and evs[3].boot == 0
    assert [n for n, _, _ in kernlog.rotated_logs(["messages", "messages-20240301", "messages-20240308", "kern.log.2.gz",
                                                 "kern.log.1", "kern.log", "secure", "syslog.1"])] == \
        ["kern.log.2.gz", "kern.log.1", "kern.log", "messages-20240301", "messages-20240308", "messages", "syslog.1"]
    assert parse_uptime_output(" 10:00:01 up 3 days,  2:11,  1 user") == 3 * 86400 + 2 * 3600 + 11 * 60
    assert parse_uptime_output("up 45 min,") == 2700 and parse_date_output("garbage") is None


def test_unnamed_protocols_keep_their_number(tmp_path):
    # ct_seq_show prints "%-8s %u" of the l4 name and number; VRRP (112) and OSPF (89) have no name
    listing = tmp_path / "nf_conntrack"
    listing.write_text(
        "ipv4     2 unknown  112 590 src=192.0.2.1 dst=224.0.0.18 [UNREPLIED] src=224.0.0.18 dst=192.0.2.1 mark=0 use=2\n"
        "ipv4     2 unknown  89 590 src=192.0.2.1 dst=224.0.0.5 [UNREPLIED] src=224.0.0.5 dst=192.0.2.1 mark=0 use=2\n"
        "ipv4     2 udp      17 29 src=192.0.2.1 dst=192.0.2.2 sport=5353 dport=53 [UNREPLIED] src=192.0.2.2 "
        "dst=192.0.2.1 sport=53 dport=5353 mark=0 use=1\n")
    import json

    for env in ({}, {"CTDOCTOR_NO_ACCEL": "1"}):
        rc, out, err = run_cli("top", "--file", str(listing), "--by", "proto", "--format", "json", env=env)
        rows = {r["key"]["proto"]: r["count"] for r in json.loads(out)["rows"]}
        assert rc == 0 and rows == {"112": 1, "89": 1, "udp": 1}, (env, rows, err)


def test_unprivileged_run_leaves_out_namespaces_it_cannot_enter():
    from tests.conftest import Netns, kernel_lab_available

    if kernel_lab_available() is not None:
        import pytest

        pytest.skip(str(kernel_lab_available()))
    with Netns("np"):
        rc, out, err = run_cli("--format", "nagios", "--interval", "0", as_nobody=True)
    assert rc == 3 and "Traceback" not in err, (rc, out, err)
    assert out.startswith("CONNTRACK UNKNOWN - not run as root: ") and "netns not entered" in out


def test_printed_fixes_of_the_new_checks_run(tmp_path):
    """CT020's sed comments out exactly the line it names; CT021's notrack command prints its rules."""
    import subprocess

    conf = "net.ipv4.netfilter.ip_conntrack_max = 65536\nnet.core.somaxconn = 1024\n"
    root = image(tmp_path, BASE, {"etc/sysctl.d/10-old-tuning.conf": conf})
    _rc, doc = doctor(root)
    (f,) = find(doc, "CT020")
    (fix,) = f["fix"]
    target = root / "etc/sysctl.d/10-old-tuning.conf"
    cmd = fix.replace("/etc/sysctl.d/10-old-tuning.conf", str(target))  # the image's copy, not this host's
    assert subprocess.run(["bash", "-c", cmd]).returncode == 0
    assert target.read_text() == ("# no such key on this kernel: net.ipv4.netfilter.ip_conntrack_max = 65536\n"
                                  "net.core.somaxconn = 1024\n")
    rc, out, err = run_cli("notrack", "--port", "4789", "--proto", "udp")
    assert rc == 0 and "4789" in out and "notrack" in out, err


def test_a_mistyped_state_is_refused_with_the_nearest_one(tmp_path):
    for argv in (["top", "--root", str(BASE), "--state", "ESTABLISHD"], ["flush", "--state", "TIME_WAI", "--dry-run"]):
        rc, _out, err = run_cli(*argv)
        assert rc == 2 and "no such state" in err and "did you mean" in err and err.count("\n") == 1, err


def test_a_thread_knows_its_own_netns_while_another_is_elsewhere():
    """Reads run in threads that enter a netns for a moment: "am I in it" must be the thread's own answer
    (a worker must not take the main thread's visit elsewhere for its own netns)."""
    import threading

    from tests.conftest import Netns, kernel_lab_available

    if kernel_lab_available() is not None:
        import pytest

        pytest.skip(str(kernel_lab_available()))
    from ctdoctor.sources import netns as nsmod

    with Netns("th") as ns:
        (ref,) = nsmod.select(nsmod.discover(), ns.name)
        (init,) = nsmod.select(nsmod.discover(), "init")
        seen = {}
        inside = threading.Event()
        release = threading.Event()

        def visit():
            def stay():
                inside.set()
                release.wait(10)
                return nsmod.is_current(ref)
            seen["visitor"] = nsmod.run_in_thread(ref, stay)

        t = threading.Thread(target=visit)
        t.start()
        inside.wait(10)
        seen["other_thread_in_init"] = nsmod.is_current(init)
        seen["other_thread_in_ns"] = nsmod.is_current(ref)
        release.set()
        t.join(10)
    assert seen == {"visitor": True, "other_thread_in_init": True, "other_thread_in_ns": False}, seen


@pytest.mark.parametrize("word,hint", [("stauts", "did you mean status?"), ("doctr", "did you mean doctor?"),
                                       ("frobnicate", "")])
def test_a_mistyped_command_is_named_with_the_nearest_one(word, hint):
    rc, out, err = run_cli(word)
    assert rc == 2 and not out
    assert err.strip().startswith(f"ctdoctor: error: unknown command {word!r}") and hint in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv", [["guard", "--once"], ["notrack", "--port", "53", "--proto", "udp"],
                                  ["recover", "--dry-run"], ["apply", "--max", "524288"], ["flush", "--state", "ALL"]])
def test_format_is_refused_where_it_does_not_apply(argv):
    fmt = "csv" if argv[0] == "flush" else "json"
    rc, out, err = run_cli("--format", fmt, *argv)
    assert rc == 2 and not out and f"--format {fmt} is not available for this command" in err
    assert err.count("\n") == 1


def test_color_always_never_and_no_color():
    base = str(RHEL7)
    _rc, out, _err = run_cli("--color", "always", "--root", base)
    assert "\x1b[" in out
    _rc, out, _err = run_cli("--color", "never", "--root", base, env={"FORCE_COLOR": "1"})
    assert "\x1b[" not in out
    _rc, out, _err = run_cli("--root", base, env={"NO_COLOR": "1", "FORCE_COLOR": ""})
    assert "\x1b[" not in out
    rc, _out, err = run_cli("--color", "sometimes", "--root", base)
    assert rc == 2 and "--color" in err


PYTHON_ON_SCREEN = re.compile(r"\{'|\('|\[\{|\bNone\b|\bTrue\b|\bFalse\b|\d\.\d{5,}|\de-\d\d")


@pytest.mark.parametrize("argv", [[], ["doctor", "--verbose"], ["status"], ["plan"], ["top", "--by", "src,state"],
                                  ["checks"], ["explain", "CT001"]])
def test_no_python_on_screen_in_any_command_on_the_test_images(argv):
    """Text output is for people: no reprs, no None/True/False, no raw long floats (a quoted kernel log line
    keeps its own timestamp)."""
    for img in sorted(p for p in (RHEL7.parent).iterdir() if p.is_dir()):
        rc, out, err = run_cli("--root", str(img), *argv, env={"COLUMNS": "80"})
        if argv[:1] == ["top"] and rc == 2 and "no entry listing" in err:
            continue  # that image holds no listing: top says so in one line
        assert out.strip(), (img.name, argv, err)
        # a kernel log line is quoted as the kernel wrote it, its [seconds since boot] stamp included
        bad = [ln for ln in out.splitlines() if PYTHON_ON_SCREEN.search(re.sub(r"\[?\s*\d+\.\d{6}\]", "", ln))]
        assert not bad, (img.name, argv, bad[:3])
