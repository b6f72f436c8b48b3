"""Issue 9 regressions: real-world formats, every sos version, hostile input, safe writers.

Images are copies of the project's host images with one thing changed, shaped like the real
files (sos plugin file names, kernel format strings, captured tool output)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from ctdoctor.sources.firewall import parse_iptables_list, parse_iptables_save, parse_nft_text
from ctdoctor.sources.kernlog import parse_kernel_log
from tests.conftest import IMAGES, assert_exit_matches, assert_one_line_error, run_cli, run_json, wait_until
from tests.unit.test_doctor_images import BASE, K8S, RHEL7, doctor, find, ids, image

# ---- command line --------------------------------------------------------------------------------


def test_a_global_option_value_is_never_taken_for_the_command():
    rc, out, err = run_cli("--root", "top", "status")
    assert_one_line_error(rc, err, code=2, contains="--root top")
    # a Nagios check must never read OK from a mistyped command line
    rc, out, err = run_cli("--root", "doctor", "--format", "nagios")
    assert_one_line_error(rc, err, code=3, contains="--root doctor")
    assert out == "CONNTRACK UNKNOWN - --root doctor: no such file or directory\n"


@pytest.mark.parametrize("args", [
    ["doctor", "--interval", "nan"], ["status", "--watch", "inf"], ["plan", "--headroom", "1e308"],
    ["plan", "--memory-budget", "1e400"], ["guard", "--interval", "1e-9"], ["top", "--limit", "1e3"],
    ["apply", "--max", "1"], ["apply", "--buckets", "1"], ["apply", "--timeout", "udp_timeout=0"],
    ["apply", "--timeout", "udp_timeout=99999999999999"],
])
def test_non_finite_or_nonsense_numbers_are_a_one_line_usage_error(args):
    rc, _out, err = run_cli("--root", str(BASE), *args)
    assert_one_line_error(rc, err, code=2)
    assert "internal error" not in err


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_doctor_exit_code_survives_a_closed_pipe(fmt):
    cmd = (f"{sys.executable} -m ctdoctor --root {RHEL7} --format {fmt} | head -c 1 >/dev/null; "
           "echo ${PIPESTATUS[0]}")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "2", r.stderr  # RHEL7 image is CRITICAL
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr


def test_a_raising_check_is_a_bug_exit_3_never_not_checked(monkeypatch, capsys):
    from ctdoctor import cli
    from ctdoctor.diagnose import doctor as doctor_mod

    class Broken:
        @staticmethod
        def run(ctx):
            raise KeyError("boom")

    monkeypatch.setattr(doctor_mod, "load", lambda code: Broken)
    rc = cli.main(["--root", str(BASE), "--only", "CT009"])
    err = capsys.readouterr().err
    assert rc == 3 and "check CT009 failed: KeyError" in err


# ---- hostile images ------------------------------------------------------------------------------


def test_meta_json_with_a_huge_number_or_wrong_types_is_refused(tmp_path):
    meta = json.loads((BASE / "ctdoctor/meta.json").read_text())
    for bad in ('{"namespaces": "x"}', '{"namespaces": [{"name": "init", "inode": ' + "9" * 1_000_000 + "}]}",
                json.dumps({**meta, "stats_interval": "soon"}), json.dumps({**meta, "namespaces": [{"name": "../x"}]})):
        img = image(tmp_path / str(len(bad)), files={"ctdoctor/meta.json": bad})
        rc, _out, err = run_cli("--root", str(img), "status")
        assert_one_line_error(rc, err, code=2, contains="meta.json")


def test_nul_byte_and_megabyte_strings_from_an_image_are_capped(tmp_path):
    img = image(tmp_path, files={"proc/sys/kernel/osrelease": "6.18.44\x00evil\n",
                                 "proc/sys/kernel/hostname": "h" * (1 << 20) + "\n"})
    t0 = time.monotonic()
    rc, _out, err = run_cli("--root", str(img), "status")
    assert rc == 0 and time.monotonic() - t0 < 30, err
    rc, doc = run_json("--root", str(img), "doctor")
    assert "\x00" not in doc["host"]["kernel"] and len(doc["host"]["hostname"]) <= 256
    assert doc["host"]["kernel"].startswith("6.18.44")


def test_a_fifo_in_an_image_is_skipped_not_waited_on(tmp_path):
    img = image(tmp_path)
    for rel in ("proc/sys/net/netfilter/nf_conntrack_count", "proc/net/nf_conntrack"):
        (img / rel).unlink()
        os.mkfifo(img / rel)
    rc, doc = run_json("--root", str(img), "status", timeout=60)
    assert any("not regular files" in n for n in doc["notes"])
    rc, _out, err = run_cli("--root", str(img), "top", timeout=60)
    assert rc == 2 and "no entry listing" in err


def _tgz(src, dst):
    with tarfile.open(dst, "w:gz") as tf:
        tf.add(src, arcname="img")
    return dst


def test_a_corrupt_tar_gz_is_refused_not_read_as_a_shorter_archive(tmp_path):
    arc = _tgz(BASE, tmp_path / "img.tar.gz")
    data = bytearray(arc.read_bytes())
    mid = len(data) // 2
    data[mid] ^= 0xFF
    data[mid + 1] ^= 0x55
    arc.write_bytes(bytes(data))
    rc, _out, err = run_cli("--root", str(arc), "doctor")
    assert_one_line_error(rc, err, code=2, contains="truncated or corrupt")


def test_the_member_limit_holds_while_headers_stream(tmp_path):
    arc = tmp_path / "many.tar"
    with tarfile.open(arc, "w") as tf:
        tf.addfile(tarfile.TarInfo("img/proc"), io.BytesIO(b""))
        for i in range(5000):
            tf.addfile(tarfile.TarInfo(f"img/x{i}"), io.BytesIO(b""))
    t0 = time.monotonic()
    rc, _out, err = run_cli("--root", str(arc), "status", env={"CTDOCTOR_ARCHIVE_MAX_MEMBERS": "100"})
    assert_one_line_error(rc, err, code=2, contains="more than 100 members")
    assert time.monotonic() - t0 < 20


def test_sigterm_removes_the_unpacked_image_and_watch_unpacks_once(tmp_path):
    arc = _tgz(BASE, tmp_path / "img.tar.gz")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "COLUMNS": "120", "FORCE_COLOR": "1"}  # forced: every redraw printed
    p = subprocess.Popen([sys.executable, "-m", "ctdoctor", "--root", str(arc), "top", "--watch", "0.2"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = bytearray()
    threading.Thread(target=lambda: [out.extend(b) for b in iter(lambda: p.stdout.read1(4096), b"")],
                     daemon=True).start()
    try:
        wait_until(lambda: out.count(b"grouped by") >= 5, timeout=60, what="five redraws")
        dirs = [d for d in tmp.iterdir() if d.name.startswith("ctdoctor-image-")]
        assert len(dirs) == 1, "one unpack for every redraw"
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
    assert not [d for d in tmp.iterdir() if d.name.startswith("ctdoctor-image-")]


# ---- sos versions ----------------------------------------------------------------------------------


def _sos42(tmp_path):
    """The k8s sosreport as sos 4.0-4.2 lays it out: per-netns networking files flat, listed by ip_netns,
    and no listing for init."""
    img = image(tmp_path, K8S)
    ns_dir = img / "sos_commands/networking/namespaces/cni-4f1e"
    for f in ns_dir.iterdir():
        shutil.move(str(f), img / "sos_commands/networking" / f.name)
    shutil.rmtree(img / "sos_commands/networking/namespaces")
    (img / "sos_commands/networking/ip_netns").write_text("cni-4f1e (id: 0)\n")
    (img / "sos_commands/conntrack/conntrack_-L_-o_extended").unlink()
    (img / "proc/net/nf_conntrack").unlink(missing_ok=True)
    return img


def test_sos_4_2_namespaces_without_a_namespaces_folder(tmp_path):
    img = _sos42(tmp_path)
    rc, doc = doctor(img)
    assert "cni-4f1e" in [n["name"] for n in doc["namespaces"]]
    (f,) = find(doc, "CT018")
    assert f["netns"] == "cni-4f1e"
    rc, top = run_json("--root", str(img), "top", "--netns", "all", "--by", "netns,state")
    assert rc == 0 and top["total"] > 0 and {r["key"]["netns"] for r in top["rows"]} == {"cni-4f1e"}
    assert any("init" in n for n in top["notes"])


JOURNAL = ("Nov 21 02:10:01 node9 kernel: nf_conntrack: nf_conntrack: table full, dropping packet\n"
           "Nov 21 02:10:06 node9 kernel: nf_conntrack: nf_conntrack: table full, dropping packet\n")


@pytest.mark.parametrize("name", ["journalctl_--no-pager_--boot", "journalctl_--no-pager_--catalog_--boot",
                                  "journalctl_--no-pager", "journalctl_--all_--this-boot_--no-pager"])
def test_rhel9_without_rsyslog_has_its_drops_only_in_the_journal(tmp_path, name):
    img = image(tmp_path, RHEL7, {"var/log/messages": None, "sos_commands/kernel/dmesg": None,
                                  f"sos_commands/logs/{name}": "-- Logs begin at ... --\n" + JOURNAL})
    rc, doc = doctor(img, "--only", "CT002")
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT002")
    assert f["evidence"]["kernel_log_lines"] == 2


def test_dmesg_T_and_var_log_dmesg_lines_are_read_with_their_time(tmp_path):
    evs = parse_kernel_log("[Tue Apr  6 10:11:12 2021] nf_conntrack: table full, dropping packet\n", "dmesg")
    assert evs[0].when == "Tue Apr  6 10:11:12 2021"
    img = image(tmp_path, RHEL7, {"var/log/messages": None, "sos_commands/kernel/dmesg": None,
                                  "var/log/dmesg": "[   12.5] nf_conntrack: table full, dropping packet\n"})
    rc, doc = doctor(img, "--only", "CT002")
    assert_exit_matches(rc, doc)
    assert find(doc, "CT002")[0]["evidence"]["kernel_log_lines"] == 1


def test_sysctl_a_with_stderr_interleaved_mid_line(tmp_path):
    from ctdoctor.sources.sysctl import parse_sysctl_a

    text = ('sysctl: net.netfilter.nf_conntrack_max = 65536\n'
            'reading key "net.ipv6.conf.all.stable_secret"net.netfilter.nf_conntrack_count = 65536\n'
            'net.netfilter.nf_conntrack_buckets = 16sysctl: reading key "net.ipv6.conf.lo.stable_secret"\n384\n'
            'net.netfilter.nf_conntrack_udp_timeout = 30\n')
    got = parse_sysctl_a(text)
    assert got["net.netfilter.nf_conntrack_max"] == "65536" and got["net.netfilter.nf_conntrack_count"] == "65536"
    assert got["net.netfilter.nf_conntrack_buckets"] == "16384" and got["net.netfilter.nf_conntrack_udp_timeout"] == "30"


def test_ct014_reads_the_ss_outputs_sos_writes(tmp_path):
    ss_s = ("Total: 2211\nTCP:   1290 (estab 1204, closed 40, orphaned 0, timewait 38)\n\n"
            "Transport Total     IP        IPv6\nRAW\t  0         0         0\n")
    img = image(tmp_path, RHEL7, {"sos_commands/networking/ss_-s": ss_s})
    rc, doc = doctor(img, "--only", "CT014")
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT014")
    assert f["evidence"]["established_sockets"]["value"] == 1204
    assert f["evidence"]["established_sockets"]["source"].endswith("ss_-s")


def test_rhel5_ip_conntrack_files(tmp_path):
    listing = ("tcp      6 431999 ESTABLISHED src=192.0.2.5 dst=198.51.100.9 sport=40001 dport=80 packets=4 "
               "bytes=300 src=198.51.100.9 dst=192.0.2.5 sport=80 dport=40001 packets=3 bytes=900 [ASSURED] "
               "mark=0 secmark=0 use=1\n") * 3
    hdr = ("entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop "
           "icmp_error  expect_new expect_create expect_delete\n")
    row = "00000003  " + " ".join(["00000000"] * 15) + "\n"
    files = {"proc/net/nf_conntrack": None, "proc/net/stat/nf_conntrack": None,
             "proc/net/ip_conntrack": listing, "proc/net/stat/ip_conntrack": hdr + row + row,
             "proc/sys/net/ipv4/netfilter/ip_conntrack_max": "65536\n",
             "proc/sys/net/ipv4/netfilter/ip_conntrack_count": "3\n"}
    img = image(tmp_path, BASE, files)
    shutil.rmtree(img / "proc/sys/net/netfilter")
    rc, doc = run_json("--root", str(img), "status")
    ns = doc["namespaces"][0]
    assert (ns["count"], ns["max"]) == (3, 65536) and ns["stats"]["drop"] == 0
    rc, top = run_json("--root", str(img), "top", "--by", "dport")
    assert rc == 0
    assert top["rows"][0]["key"]["dport"] == 80 and top["rows"][0]["count"] == 3


def test_etc_modprobe_conf_is_read(tmp_path):
    img = image(tmp_path, RHEL7, {"etc/modprobe.conf": "alias eth0 e1000\ninstall nf_conntrack /bin/true\n"})
    rc, doc = doctor(img, "--only", "CT008")
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT008")
    assert "/etc/modprobe.conf" in json.dumps(f["evidence"])


# ---- firewall rules ------------------------------------------------------------------------------------


def test_redirect_in_icmp_matches_is_not_nat():
    text = ("table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n"
            "\t\ticmpv6 type { nd-neighbor-solicit, nd-router-advert, nd-redirect } accept\n"
            "\t\ticmp type redirect drop\n\t\tct state established,related accept\n\t}\n}\n")
    assert parse_nft_text(text, "nft").nat == []
    assert parse_nft_text("table ip nat {\n chain o {\n  tcp dport 80 redirect to :8080\n }\n}\n", "n").nat


def test_iptables_save_with_counters_still_shows_nat():
    text = ("*nat\n:POSTROUTING ACCEPT [0:0]\n[12:720] -A POSTROUTING -s 10.0.0.0/8 -o eth0 -j MASQUERADE\n"
            "COMMIT\n")
    assert len(parse_iptables_save(text, "/etc/sysconfig/iptables").nat) == 1


def test_synproxy_recipe_counts_as_handling_untracked():
    save = ("*raw\n-A PREROUTING -i eth0 -p tcp -m tcp --syn --dport 80 -j CT --notrack\nCOMMIT\n*filter\n"
            "-A INPUT -i eth0 -p tcp -m tcp --dport 80 -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY "
            "--sack-perm --timestamp --wscale 7 --mss 1460\n-A INPUT -m conntrack --ctstate INVALID -j DROP\n"
            "COMMIT\n")
    s = parse_iptables_save(save, "x")
    assert s.notrack and s.untracked_accept


def test_sos3_rule_files_are_read(tmp_path):
    nvl = ("Chain POSTROUTING (policy ACCEPT 0 packets, 0 bytes)\n"
           " pkts bytes target     prot opt in     out     source               destination\n"
           "  120  7200 MASQUERADE  all  --  *      eth0    10.0.0.0/8           0.0.0.0/0\n")
    assert parse_iptables_list(nvl, "x").nat
    img = image(tmp_path, RHEL7, {"sos_commands/networking/iptables_-t_nat_-nvL": nvl,
                                  "etc/sysconfig/iptables": None})
    for p in (img / "sos_commands/firewall_tables").glob("*"):
        p.unlink()
    rc, doc = run_json("--root", str(img), "doctor", "--only", "CT005")
    assert_exit_matches(rc, doc)
    assert not any(u["id"] == "CT005" for u in doc["unknown"]), doc["unknown"]


# ---- writers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/tmp/ctd-outside-{}", "../../outside-{}"])
def test_apply_never_writes_through_a_symlink_out_of_the_image(tmp_path, target):
    img = image(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    d = img / "etc/sysctl.d"
    shutil.rmtree(d, ignore_errors=True)
    d.symlink_to(outside if target.startswith("/") else os.path.relpath(outside, img / "etc"))
    rc, _out, err = run_cli("--root", str(img), "apply", "--max", "524288", "--yes")
    assert_one_line_error(rc, err, code=2, contains="outside")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("folder,args", [
    ("etc/modprobe.d", ["--max", "524288", "--buckets", "131072"]),  # options nf_conntrack hashsize=
    ("etc/udev/rules.d", ["--max", "524288"]),  # the re-apply rule
    ("etc/modules-load.d", ["--max", "524288"]),
    ("etc/sysconfig", ["--max", "524288"]),  # iptables-config
])
def test_every_file_apply_writes_refuses_a_symlinked_folder_out_of_the_image(tmp_path, folder, args):
    from tests.unit.test_fixers_images import rhel_bundle

    img = rhel_bundle(tmp_path)  # a loadable module and iptables-config: apply writes every one of these
    outside = tmp_path / "outside"
    d = img / folder
    if d.exists():
        shutil.copytree(d, outside)
        shutil.rmtree(d)
    else:
        outside.mkdir()
    d.parent.mkdir(parents=True, exist_ok=True)
    d.symlink_to(outside)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    rc, out, err = run_cli("--root", str(img), "apply", *args, "--yes")
    # refused in one line; or (iptables-config: a file read through the link is not read at all) left alone
    assert (rc == 2 and "outside" in err) or (folder == "etc/sysconfig" and "iptables-config" not in out), \
        (rc, out, err)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before  # nothing written or changed there


def test_apply_never_writes_the_live_value_through_a_symlinked_proc_sys_out_of_the_image(tmp_path):
    img = image(tmp_path)
    outside = tmp_path / "outside-netfilter"
    shutil.copytree(img / "proc/sys/net/netfilter", outside)
    before = (outside / "nf_conntrack_max").read_text()
    shutil.rmtree(img / "proc/sys/net/netfilter")
    (img / "proc/sys/net/netfilter").symlink_to(outside)
    rc, _out, err = run_cli("--root", str(img), "apply", "--max", "524288", "--yes")
    assert_one_line_error(rc, err, code=2, contains="outside")
    assert (outside / "nf_conntrack_max").read_text() == before


def test_apply_names_a_later_file_that_overrides_it(tmp_path):
    img = image(tmp_path, files={"etc/sysctl.d/95-mine.conf": "net.netfilter.nf_conntrack_max = 65536\n"})
    rc, out, _err = run_cli("--root", str(img), "apply", "--max", "524288", "--yes")
    assert rc == 1 and "95-mine.conf:1" in out and "at boot it wins" in out
    rc, out, _err = run_cli("--root", str(img), "apply", "--max", "524288", "--yes")
    assert rc == 1 and "nothing to change" in out and "95-mine.conf" in out


def test_apply_keeps_an_existing_files_mode_and_refuses_max_below_count(tmp_path):
    img = image(tmp_path, files={"etc/sysctl.d/90-ctdoctor.conf": "net.netfilter.nf_conntrack_max = 262144\n"})
    os.chmod(img / "etc/sysctl.d/90-ctdoctor.conf", 0o600)
    rc, out, err = run_cli("--root", str(img), "apply", "--max", "524288", "--yes")
    assert rc == 0, out + err
    assert (img / "etc/sysctl.d/90-ctdoctor.conf").stat().st_mode & 0o777 == 0o600
    (img / "proc/sys/net/netfilter/nf_conntrack_count").write_text("200000\n")
    rc, out, err = run_cli("--root", str(img), "apply", "--max", "131072")
    assert_one_line_error(rc, err, code=2, contains="below the 200000 entries")


def test_guard_once_fails_when_it_cannot_restore_and_never_writes_junk(tmp_path):
    img = image(tmp_path, files={"etc/sysctl.d/90-x.conf": "net.netfilter.nf_conntrack_tcp_timeout_established = abc\n"})
    live = img / "proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established"
    before = live.read_text()
    rc, out, err = run_cli("--root", str(img), "guard", "--once")
    assert rc == 1 and "is not a number" in out and live.read_text() == before
    rc, out, err = run_cli("--root", str(img), "guard", "--once", "--netns", "pod1")
    assert_one_line_error(rc, err, code=2, contains="--netns")


def test_notrack_accept_goes_after_the_users_drops():
    from ctdoctor.write.notrack import accept_position

    def rule(h, *exprs):
        return {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": h, "expr": list(exprs)}}

    m = {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "192.0.2.9"}}
    objs = [rule(3, {"match": {"left": {"ct": {"key": "state"}}}}, {"accept": None}),
            rule(4, m, {"drop": None}), rule(5, m, {"accept": None}), rule(6, {"drop": None})]
    assert accept_position(objs, ("inet", "filter", "input")) == ("add", 4)
    assert accept_position(objs[:1] + objs[3:], ("inet", "filter", "input")) == ("insert", 6)
    assert accept_position(objs[:1], ("inet", "filter", "input")) == ("add", None)
    # a drop with a condition it does not model is still a drop with a condition: the accept goes after
    limit = {"limit": {"rate": 10, "per": "second", "inv": True}}
    objs2 = [rule(3, {"match": {"left": {"ct": {"key": "state"}}}}, {"accept": None}),
             rule(7, limit, {"drop": None}), rule(8, {"counter": {"packets": 0, "bytes": 0}}, {"drop": None})]
    assert accept_position(objs2, ("inet", "filter", "input")) == ("add", 7)
    # a jump or goto can drop in the chain it goes to: the accept waits after it
    objs3 = [rule(3, m, {"jump": {"target": "blocklist"}}), rule(9, {"goto": {"target": "more"}}),
             rule(10, {"meter": {"name": "m"}}, {"reject": None})]
    assert accept_position(objs3[:1] + objs3[2:], ("inet", "filter", "input")) == ("add", 10)
    # every packet goes elsewhere for good: no safe place in this chain, so it says so instead
    assert accept_position(objs3, ("inet", "filter", "input")) == ("refuse", 9)
    from ctdoctor.errors import Failure
    from ctdoctor.write.notrack import accept_command

    with pytest.raises(Failure, match="rule handle 9 sends every packet to another chain"):
        accept_command(objs3, ("inet", "filter", "input"))


def test_anonymizer_replaces_every_copy_of_the_host_name():
    from ctdoctor.bundle.collect import Anonymizer, _host_names

    a = Anonymizer()
    a.set_names(dict.fromkeys(_host_names("gw01.example.com"), "anonymized"))
    text = ("Linux gw01.example.com 3.10.0 #1 SMP x86_64 GNU/Linux\nkernel.hostname = gw01\n"
            "Nov 20 03:14:07 gw01 kernel: nf_conntrack: table full\nnet.ipv4.gw01x = 1\n")
    out = a.text(text)
    assert "gw01 " not in out and "gw01.example" not in out and "= gw01\n" not in out
    assert "net.ipv4.gw01x" in out  # only whole names


def test_failed_live_command_output_is_not_data():
    from ctdoctor.sources.hostroot import HostRoot, run_command

    cap = run_command("ls /nonexistent-ctdoctor-path")
    assert cap is not None and cap.status != 0
    assert HostRoot.live().capture("kernel", "ls /nonexistent-ctdoctor-path") is None


def test_k8s_image_unchanged_by_all_this():
    rc, doc = doctor(K8S)
    assert_exit_matches(rc, doc)
    assert "CT018" in ids(doc) and (IMAGES / "sosreport-node7-k8s").is_dir()


def test_a_log_line_from_before_a_netns_existed_is_not_its_drop(tmp_path):
    """Inodes are reused: a deleted pod's 'table full in netns N' must not be charged to the new netns
    that got inode N (seen in CI: a lab netns inherited an earlier run's lines)."""
    from ctdoctor.sources.hostroot import HostRoot
    from ctdoctor.sources.snapshot import NetnsState, Snapshot, _not_before_birth

    now = time.time()
    (tmp_path / "ctdoctor").mkdir()
    (tmp_path / "ctdoctor/meta.json").write_text(json.dumps(
        {"boot_time": now - 1000, "namespaces": [{"name": "pod", "inode": 4026532177, "born": now}]}))
    root = HostRoot(tmp_path, "bundle", "x")
    snap = Snapshot("bundle", "x")
    snap.namespaces = [NetnsState("pod", 4026532177)]
    lines = ("[  100.000000] nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet\n"
             "[  999.900000] nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet\n")
    kept = _not_before_birth(parse_kernel_log(lines, "dmesg"), root, snap)
    assert [e.mono for e in kept] == ["999.900000"] and "earlier namespace" in snap.notes[0]
