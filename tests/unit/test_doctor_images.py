"""Every check, positive and negative, on host images in real formats.

The negative base is a real bundle captured from the idle 6.18 lab host
(tests/images/bundle-vm-6.18); positives change the few files a real incident
changes, written in the kernel's and the tools' own formats. The RHEL 7 and
Kubernetes sosreports are incidents as captured.
"""

import json
import shutil
from pathlib import Path

import pytest

from ctdoctor.listing.entry import Entry, Tuple, format_entry
from tests.conftest import IMAGES, assert_exit_matches, assert_one_line_error, run_cli, run_in_pty

BASE = IMAGES / "bundle-vm-6.18"
RHEL7 = IMAGES / "sosreport-gw01-rhel7"
K8S = IMAGES / "sosreport-node7-k8s"
NF = "proc/sys/net/netfilter/"
STAT_HEADER = ("entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop "
               "icmp_error  expect_new expect_create expect_delete search_restart")


def image(tmp_path, base=BASE, files=None):
    """A copy of a base image with files replaced (None deletes)."""
    dst = tmp_path / "img"
    shutil.copytree(base, dst, symlinks=True)
    for rel, content in (files or {}).items():
        p = dst / rel
        if content is None:
            p.unlink(missing_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return dst


def doctor(root, *args):
    rc, out, err = run_cli("--root", str(root), "doctor", "--format", "json", *args)
    assert out, err
    doc = json.loads(out)
    return rc, doc


def ids(doc, sev=None):
    return {f["id"] for f in doc["findings"] if sev is None or f["severity"] == sev}


def find(doc, code):
    return [f for f in doc["findings"] if f["id"] == code]


def stat(cpus=2, count=0, **vals):
    cols = STAT_HEADER.split()
    rows = []
    for _ in range(cpus):
        row = dict.fromkeys(cols, 0)
        row["entries"] = count
        row.update(vals)
        rows.append("  ".join(f"{row[c]:08x}" for c in cols))
    return STAT_HEADER + "\n" + "\n".join(rows) + "\n"


def listing(states: dict, src="10.1.2.3", dports=(443,), heavy_src=None, heavy_share=0.0):
    """A /proc/net/nf_conntrack listing in the kernel's format: {label: n}."""
    lines, i = [], 0
    total = sum(states.values())
    for label, n in states.items():
        for _ in range(n):
            s = heavy_src if heavy_src and i < heavy_share * total else f"10.{(i >> 8) & 255}.{i & 255}.9"
            i += 1
            d = "192.0.2.10"
            dport = dports[i % len(dports)]
            if label == "UNREPLIED":
                e = Entry("ipv4", "udp", 17, 25, None, Tuple(s, d, 40000 + i % 20000, 53),
                          Tuple(d, s, 53, 40000 + i % 20000), unreplied=True, mark=0, zone=0, use=2)
            else:
                e = Entry("ipv4", "tcp", 6, 100, label, Tuple(s, d, 20000 + i % 40000, dport),
                          Tuple(d, s, dport, 20000 + i % 40000), unreplied=label == "SYN_SENT",
                          assured=label not in ("SYN_SENT", "SYN_RECV"), mark=0, zone=0, use=2)
            lines.append(format_entry(e, "proc"))
    return "\n".join(lines) + "\n"


# ---- the negative: a real idle host --------------------------------------------------------


def test_idle_host_image_has_no_problem():
    rc, doc = doctor(BASE)
    assert rc == 0 and ids(doc, "critical") == set() and ids(doc, "warning") == set()
    assert doc["summary"]["unknown"] == 0
    assert ids(doc) == {"CT015"}  # only the built-in note


# ---- CT001 / CT018 ------------------------------------------------------------------------------


def test_ct001_critical_and_warning(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": "262144\n"}))
    (f,) = find(doc, "CT001")
    assert rc == 2 and f["severity"] == "critical" and f["netns"] == "init"
    assert f["evidence"]["count"] == {"value": 262144, "source": "/proc/sys/net/netfilter/nf_conntrack_count"}
    assert any("nf_conntrack_max=524288" in c for c in f["fix"]) and any("ctdoctor apply" in c for c in f["fix"])
    shutil.rmtree(tmp_path / "img")
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": str(int(262144 * 0.92))}))
    assert rc == 1 and find(doc, "CT001")[0]["severity"] == "warning"
    shutil.rmtree(tmp_path / "img")
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": str(int(262144 * 0.85))}))
    assert rc == 1 and find(doc, "CT001")[0]["severity"] == "warning"  # one threshold everywhere: 80 %
    shutil.rmtree(tmp_path / "img")
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": str(int(262144 * 0.75))}))
    assert "CT001" not in ids(doc)


def test_ct001_unknown_without_count(tmp_path):
    root = image(tmp_path)
    shutil.rmtree(root / "proc/sys/net/netfilter")
    (root / "sos_commands/kernel/sysctl_-a").write_text("kernel.hostname = vm\n")
    rc, doc = doctor(root)
    assert rc == 3 and any(u["id"] == "CT001" for u in doc["unknown"])


def _with_pod(tmp_path, count, dmesg=None, base=BASE):
    root = image(tmp_path, base)
    meta = json.loads((root / "ctdoctor/meta.json").read_text())
    meta["namespaces"].append({"name": "cni-77", "inode": 4026532177, "owner": "pause:4242", "sos_name": None})
    (root / "ctdoctor/meta.json").write_text(json.dumps(meta))
    nsdir = root / "ctdoctor/netns/cni-77"
    shutil.copytree(root / "proc/sys/net/netfilter", nsdir / "proc/sys/net/netfilter")
    (nsdir / "proc/sys/net/netfilter/nf_conntrack_count").write_text(f"{count}\n")
    (nsdir / "proc/net/stat").mkdir(parents=True)
    (nsdir / "proc/net/stat/nf_conntrack").write_text(stat(count=count, drop=3 if dmesg else 0))
    if dmesg:
        (root / "sos_commands/kernel/dmesg").write_text(dmesg)
    return root


def test_ct018_pod_at_the_global_max_and_ct002_matched_by_inode(tmp_path):
    dmesg = ("[ 5123.991871] nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet\n"
             "[ 5124.002003] nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet\n")
    rc, doc = doctor(_with_pod(tmp_path, 262144, dmesg))
    assert rc == 2
    ct18 = find(doc, "CT018")
    assert len(ct18) == 1 and ct18[0]["netns"] == "cni-77" and ct18[0]["severity"] == "critical"
    ct02 = find(doc, "CT002")
    assert [f["netns"] for f in ct02] == ["cni-77"], "the 6.18 line names the netns: not attributed to init"
    assert ct02[0]["evidence"]["netns_inferred"] is False and ct02[0]["evidence"]["kernel_log_lines"] == 2
    assert {f["netns"] for f in find(doc, "CT001")} == {"cni-77"}


def test_ct018_negative(tmp_path):
    rc, doc = doctor(_with_pod(tmp_path, 1000))
    assert rc == 0 and "CT018" not in ids(doc)


def test_ct018_from_a_sosreport():
    rc, doc = doctor(K8S)
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT018")
    assert f["netns"] == "cni-4f1e" and f["evidence"]["count"]["source"].endswith("ip_netns_exec_cni-4f1e_sysctl_-a")


# ---- CT002 / CT003 -------------------------------------------------------------------------------------


def test_ct002_counters_and_old_log_format(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {"proc/net/stat/nf_conntrack": stat(count=5, drop=7, insert_failed=2)}))
    (f,) = find(doc, "CT002")
    assert f["severity"] == "warning" and f["evidence"]["drop"]["value"] == 14
    rc, doc = doctor(RHEL7)
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT002")
    # the same 3 events are in sos_commands/kernel/dmesg and /var/log/messages: counted once
    assert f["severity"] == "critical" and f["evidence"]["kernel_log_lines"] == 3
    assert any("counted once" in n for n in doc["notes"])


def test_ct002_without_netns_in_the_line_is_inferred(tmp_path):
    dmesg = "[ 12.5] nf_conntrack: nf_conntrack: table full, dropping packet\n"
    rc, doc = doctor(_with_pod(tmp_path, 262144, dmesg))
    assert_exit_matches(rc, doc)
    by = {f["netns"]: f for f in find(doc, "CT002")}
    assert by["cni-77"]["evidence"]["netns_inferred"] is True


def test_ct002_ct003_negative():
    rc, doc = doctor(BASE)
    assert_exit_matches(rc, doc)
    assert not ids(doc) & {"CT002", "CT003"}


def test_ct003_early_drop(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {"proc/net/stat/nf_conntrack": stat(count=5, early_drop=40)}))
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT003")
    # counted since boot in a near-empty table: history, not a page
    assert f["severity"] == "info" and f["evidence"]["early_drop"]["value"] == 80
    assert "CT002" not in ids(doc)


def test_rates_from_the_bundle_second_sample(tmp_path):
    root = image(tmp_path, BASE, {"proc/net/stat/nf_conntrack": stat(count=5, drop=7),
                              "ctdoctor/samples/init/nf_conntrack.stat": stat(count=5, drop=12)})
    rc, doc = doctor(root)
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT002")
    assert f["evidence"]["drop_per_second"] == 10.0 and f["severity"] == "critical"


# ---- CT004 ------------------------------------------------------------------------------------------------


def test_ct004_count_far_above_listing(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": "5000\n",
                                        "proc/net/nf_conntrack": listing({"ESTABLISHED": 10})}))
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT004")
    assert f["evidence"]["gap"] == 4990 and "ecache dying list" in f["explanation"]


def test_ct004_explains_differently_before_5_19(tmp_path):
    root = image(tmp_path, BASE, {NF + "nf_conntrack_count": "5000\n", "proc/net/nf_conntrack": listing({"ESTABLISHED": 10}),
                              "proc/sys/kernel/osrelease": "5.4.0-150-generic\n"})
    rc, doc = doctor(root)
    assert_exit_matches(rc, doc)
    assert "per-CPU unconfirmed list" in find(doc, "CT004")[0]["explanation"]


def test_ct004_negative_and_sample(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": "10\n",
                                        "proc/net/nf_conntrack": listing({"ESTABLISHED": 10})}))
    assert "CT004" not in ids(doc)
    rc, doc = doctor(K8S)
    assert_exit_matches(rc, doc)
    assert any(u["id"] == "CT004" and "sample" in u["reason"] for u in doc["unknown"])


# ---- CT005 / CT006 / CT007 / CT008 / CT015 (module and config incidents) ------------------------------------


def test_ct005_nat_rules_without_nf_nat(tmp_path):
    lsmod = (RHEL7 / "sos_commands/kernel/lsmod").read_text()
    lsmod = "\n".join(ln for ln in lsmod.splitlines() if not ln.startswith(("nf_nat", "iptable_nat")))
    rc, doc = doctor(image(tmp_path, RHEL7, {"sos_commands/kernel/lsmod": lsmod}))
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT005")
    assert f["severity"] == "critical" and f["evidence"]["missing_modules"] == ["nf_nat"]
    # the image's modprobe.d has `install nf_conntrack /bin/true` (CT008): undone first, or every load is a no-op
    assert f["fix"][0].startswith("sed -i '2s/^/# disabled by ctdoctor advice: /' /etc/modprobe.d/nf_conntrack.conf")
    assert "nf_conntrack_ipv4" in f["fix"][1], "3.10 needs the per-family module"
    assert f["fix"][3].startswith("systemctl restart iptables"), "a RHEL host (iptables-config) reloads this way"


def test_ct005_negative():
    rc, doc = doctor(RHEL7)
    assert_exit_matches(rc, doc)
    assert "CT005" not in ids(doc)


def test_ct006_ct007_ct008_from_the_rhel7_incident():
    rc, doc = doctor(RHEL7)
    assert rc == 2
    (d,) = find(doc, "CT006")
    keys = {x["key"] for x in d["evidence"]["drift"]}
    assert keys == {"net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_tcp_timeout_established"}
    assert "module was (re)loaded" in d["explanation"]
    (u,) = find(doc, "CT007")
    assert u["severity"] == "critical" and u["evidence"]["IPTABLES_MODULES_UNLOAD"] == "yes"
    (m,) = find(doc, "CT008")
    assert m["severity"] == "critical" and "never be loaded" in m["explanation"]
    assert m["evidence"]["lines"][0]["file"] == "/etc/modprobe.d/nf_conntrack.conf"
    (h,) = find(doc, "CT015")
    assert h["evidence"]["holders"] == ["nf_nat", "nf_nat_ipv4", "xt_conntrack", "nf_conntrack_ipv4"]


def test_ct006_builtin_drift_explanation(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {"etc/sysctl.d/90-ct.conf": "net.netfilter.nf_conntrack_max = 524288\n"}))
    assert_exit_matches(rc, doc)
    (d,) = find(doc, "CT006")
    assert "built into this kernel" in d["explanation"]


def test_ct007_ct008_negatives(tmp_path):
    cfg = (RHEL7 / "etc/sysconfig/iptables-config").read_text().replace(
        '#IPTABLES_SYSCTL_LOAD_LIST=".nf_conntrack .bridge-nf"', 'IPTABLES_SYSCTL_LOAD_LIST=".nf_conntrack"')
    rc, doc = doctor(image(tmp_path, RHEL7, {"etc/sysconfig/iptables-config": cfg,
                                             "etc/modprobe.d/nf_conntrack.conf": "remove nf_conntrack /bin/false\n"}))
    assert_exit_matches(rc, doc)
    assert not ids(doc) & {"CT007", "CT008"}


def test_ct008_info_when_no_rule_needs_conntrack(tmp_path):
    # BASE has rules, none of them NAT or state: the trap would break nothing today
    root = image(tmp_path, BASE, {"etc/modprobe.d/x.conf": "install nf_nat /bin/false\n"})
    rc, doc = doctor(root)
    assert_exit_matches(rc, doc)
    (m,) = find(doc, "CT008")
    assert m["severity"] == "info" and ("no NAT or state rule" in m["summary"] or "built into" in m["summary"])


def test_ct015_unknown_without_module_data(tmp_path):
    root = image(tmp_path)
    shutil.rmtree(root / "sys/module")
    shutil.rmtree(root / "proc/sys/net/netfilter")
    (root / "sos_commands/kernel/sysctl_-a").unlink()
    rc, doc = doctor(root)
    assert_exit_matches(rc, doc)
    assert any(u["id"] == "CT015" for u in doc["unknown"])


# ---- CT009 / CT010 / CT017 / CT019 (settings) -----------------------------------------------------------


def test_ct009_ratio_and_chainlength(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_buckets": "16384\n",
                                        "proc/net/stat/nf_conntrack": stat(count=0, chainlength=5)}))
    assert_exit_matches(rc, doc)
    fs = find(doc, "CT009")
    # an idle table: long chains cost nothing yet, and the chainlength count is since boot
    assert {f["severity"] for f in fs} == {"info"} and len(fs) == 2
    assert fs[0]["evidence"]["ratio"] == 16.0
    shutil.rmtree(tmp_path / "img")
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_buckets": "16384\n", NF + "nf_conntrack_count": "230000\n",
                                        "proc/net/stat/nf_conntrack": stat(count=230000, chainlength=5)}))
    assert {f["severity"] for f in find(doc, "CT009")} == {"warning"}  # under pressure: worth attention


def test_ct009_ct010_ct017_ct019_negative():
    rc, doc = doctor(BASE)
    assert_exit_matches(rc, doc)
    assert not ids(doc) & {"CT009", "CT010", "CT017", "CT019"}


def test_ct010_memory(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_max": "60000000\n"}))
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT010")
    assert f["severity"] == "warning" and f["evidence"]["entry_size"]["source"].startswith("/proc/slabinfo")


def test_ct017_liberal(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_tcp_be_liberal": "1\n", NF + "nf_conntrack_tcp_loose": "0\n"}))
    fs = find(doc, "CT017")
    assert {f["severity"] for f in fs} == {"info"} and len(fs) == 2 and rc == 0


def test_ct019_expectations(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {"sos_commands/kernel/dmesg": "[ 9.1] nf_conntrack: expectation table full\n"}))
    assert find(doc, "CT019")[0]["severity"] == "warning"
    shutil.rmtree(tmp_path / "img")
    expect = "".join(f"296 l3proto = 2 proto=6 src=192.0.2.1 dst=192.0.2.{i % 250} sport=0 dport={20000 + i} "
                     f"ftp\n" for i in range(4000))
    rc, doc = doctor(image(tmp_path, BASE, {"proc/net/nf_conntrack_expect": expect}))
    assert_exit_matches(rc, doc)
    assert find(doc, "CT019")[0]["severity"] == "critical"


# ---- CT011 / CT012 / CT013 / CT014 (the listing) --------------------------------------------------------------


def test_ct011_established_dominates_a_busy_table(tmp_path):
    lst = listing({"ESTABLISHED": 900, "TIME_WAIT": 100})
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": "1000\n", NF + "nf_conntrack_max": "1500\n",
                                        NF + "nf_conntrack_buckets": "1024\n", "proc/net/nf_conntrack": lst}))
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT011")
    assert f["evidence"]["state"] == "ESTABLISHED" and f["evidence"]["timeout"]["value"] == 432000
    assert "nf_conntrack_tcp_timeout_established=86400" in f["fix"][0]


def test_ct011_negative_when_not_busy(tmp_path):
    lst = listing({"ESTABLISHED": 900, "TIME_WAIT": 100})
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": "1000\n", "proc/net/nf_conntrack": lst}))
    assert_exit_matches(rc, doc)
    assert "CT011" not in ids(doc)


@pytest.mark.parametrize("states,label", [({"SYN_SENT": 60, "ESTABLISHED": 140}, "SYN_SENT"),
                                          ({"UNREPLIED": 150, "ESTABLISHED": 150}, "UNREPLIED"),
                                          ({"TIME_WAIT": 180, "ESTABLISHED": 20}, "TIME_WAIT")])
def test_ct012_state_pileups(tmp_path, states, label):
    n = sum(states.values())
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": f"{n}\n", "proc/net/nf_conntrack": listing(states)}))
    assert_exit_matches(rc, doc)
    assert label in {f["evidence"]["state"] for f in find(doc, "CT012")}


def test_ct012_negative(tmp_path):
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": "300\n",
                                        "proc/net/nf_conntrack": listing({"ESTABLISHED": 290, "TIME_WAIT": 10})}))
    assert_exit_matches(rc, doc)
    assert "CT012" not in ids(doc)


def test_ct013_heavy_source(tmp_path):
    lst = listing({"ESTABLISHED": 2000}, heavy_src="198.51.100.77", heavy_share=0.6)
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": "2000\n", NF + "nf_conntrack_max": "3000\n",
                                        NF + "nf_conntrack_buckets": "3000\n", "proc/net/nf_conntrack": lst}))
    assert_exit_matches(rc, doc)
    fs = [f for f in find(doc, "CT013") if f["evidence"]["key"] == "src"]
    assert fs and fs[0]["evidence"]["value"] == "198.51.100.77" and fs[0]["severity"] == "info"  # 67 %: no pressure
    shutil.rmtree(tmp_path / "img")
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": "2000\n", NF + "nf_conntrack_max": "2200\n",
                                        NF + "nf_conntrack_buckets": "2200\n", "proc/net/nf_conntrack": lst}))
    fs = [f for f in find(doc, "CT013") if f["evidence"]["key"] == "src"]
    assert fs and fs[0]["severity"] == "warning"  # 91 % full: the heavy source is the lead


def test_ct013_negative(tmp_path):
    lst = listing({"ESTABLISHED": 2000}, dports=(443, 80, 22, 25, 53, 8080))
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": "2000\n", "proc/net/nf_conntrack": lst}))
    assert_exit_matches(rc, doc)
    assert not [f for f in find(doc, "CT013") if f["evidence"]["key"] == "src"]


def test_ct014_established_sockets_with_a_full_table(tmp_path):
    ss = "0      0      10.0.0.5:22   10.0.0.9:51234\n0      0      10.0.0.5:443  10.0.0.7:40000\n"
    rc, doc = doctor(image(tmp_path, BASE, {NF + "nf_conntrack_count": "262144\n",
                                        "sos_commands/networking/ss_-tanH_state_established": ss}))
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT014")
    assert f["severity"] == "info" and f["evidence"]["established_sockets"]["value"] == 2


def test_ct014_negative():
    rc, doc = doctor(BASE)
    assert_exit_matches(rc, doc)
    assert "CT014" not in ids(doc)


# ---- CT016 -------------------------------------------------------------------------------------------------------


NFT_NOTRACK = """table inet raw {
	chain pre {
		type filter hook prerouting priority raw; policy accept;
		udp dport 53 notrack
	}
}
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		%s
	}
}
"""


def test_ct016_notrack_without_untracked_accept(tmp_path):
    root = image(tmp_path, BASE, {"sos_commands/firewall_tables/nft_-a_list_ruleset": NFT_NOTRACK % "",
                                  "sos_commands/nftables/nft_-j_list_ruleset": None})
    rc, doc = doctor(root)
    assert_exit_matches(rc, doc)
    (f,) = find(doc, "CT016")
    assert f["severity"] == "warning"


def test_ct016_negative(tmp_path):
    root = image(tmp_path, BASE, {"sos_commands/firewall_tables/nft_-a_list_ruleset":
                                  NFT_NOTRACK % "ct state untracked accept",
                                  "sos_commands/nftables/nft_-j_list_ruleset": None})
    rc, doc = doctor(root)
    assert_exit_matches(rc, doc)
    assert "CT016" not in ids(doc)


# ---- output formats, selection, schema ---------------------------------------------------------------------------


def test_json_validates_against_the_shipped_schema(tmp_path):
    import jsonschema

    schema = json.loads((Path(__file__).parents[2] / "src/ctdoctor/schemas/doctor.schema.json").read_text())
    for root in (BASE, RHEL7, K8S):
        rc, doc = doctor(root)
        assert_exit_matches(rc, doc)
        jsonschema.validate(doc, schema)


def test_only_and_skip(tmp_path):
    rc, doc = doctor(RHEL7, "--only", "CT006,ct008")
    assert ids(doc) == {"CT006", "CT008"} and rc == 2
    rc, doc = doctor(RHEL7, "--skip", "CT001,CT002,CT005,CT007,CT008")
    assert rc == 1 and "CT001" not in ids(doc)
    rc, _out, err = run_cli("--root", str(RHEL7), "doctor", "--only", "CT999")
    assert_one_line_error(rc, err, code=2, contains="CT999")


def test_nagios_output_and_exit_codes(tmp_path):
    rc, out, _err = run_cli("--root", str(RHEL7), "--format", "nagios")
    line = out.strip()
    assert rc == 2 and line.startswith("CONNTRACK CRITICAL - ") and "\n" not in line
    perf = line.split(" | ", 1)[1]
    assert "'count_init'=65536;52428;62259;0;65536" in perf and "'drop_init'=27c" in perf and "'fill_init'=100.00%" in perf
    rc, out, _err = run_cli("--root", str(BASE), "--format", "nagios")
    assert rc == 0 and out.startswith("CONNTRACK OK")


def test_text_output_groups_by_severity():
    rc, out, _err = run_cli("--root", str(RHEL7))
    assert rc == 2
    # the overview first: one entry per finding, worst first, each with its first fix
    assert out.index("CRIT CT001") < out.index("WARN CT006") < out.index("INFO CT015") < out.index("details")
    assert "$ sysctl -w net.netfilter.nf_conntrack_max=1048576" in out
    # then the details of the warnings and criticals; the info ones with --verbose
    assert out.index("details") < out.index("CRITICAL CT001") < out.index("WARNING CT006")
    assert "INFO CT015" not in out.split("details", 1)[1]
    _rc, verbose, _err = run_cli("--root", str(RHEL7), "doctor", "--verbose")
    assert "INFO CT015" in verbose.split("details", 1)[1]


def test_a_check_over_many_namespaces_is_one_entry_in_the_overview():
    from ctdoctor.render.doctor_text import render

    f = {"severity": "warning", "id": "CT013", "title": "one key holds much of the table", "summary": "s",
         "evidence": {}, "explanation": "", "fix": [], "fixes": []}
    doc = {"host": {"hostname": "h", "kernel": "6.18", "source": "live"},
           "summary": {"critical": 0, "warning": 5, "info": 0, "unknown": 0}, "unknown": [], "notes": [],
           "findings": [{**f, "netns": f"pod-{i}", "pod": None} for i in range(5)]}
    from rich.console import Console

    con = Console(width=80, record=True, file=__import__("io").StringIO())
    con.print(render(doc, width=80))
    text = con.export_text()
    overview = text.split("details", 1)[0]
    assert overview.count("CT013") == 1 and "5 namespaces (pod-0, pod-1, pod-2 and 2 more)" in overview


def test_explain_and_checks():
    rc, out, err = run_cli("checks")
    assert rc == 0 and len(out.strip().splitlines()) == 21
    for code in [f"CT{n:03d}" for n in range(1, 22)]:
        rc, out, err = run_cli("explain", code.lower())
        assert rc == 0
        for section in ("What it detects", "Why it matters", "How to fix"):
            assert section in out, (code, section)
    rc, out, err = run_cli("explain", "CT099")
    assert_one_line_error(rc, err, code=2, contains="no check 'CT099'")


def test_compare_two_images_gives_rates(tmp_path):
    a = image(tmp_path, BASE, {"proc/net/stat/nf_conntrack": stat(count=5, drop=10)})
    b = tmp_path / "later"
    shutil.copytree(a, b)
    (b / "proc/net/stat/nf_conntrack").write_text(stat(count=5, drop=40))
    meta = json.loads((b / "ctdoctor/meta.json").read_text())
    meta["created"] = "2026-11-21T22:08:27+0000"  # 60 s after the first image
    (b / "ctdoctor/meta.json").write_text(json.dumps(meta))
    (a / "ctdoctor/samples/init/nf_conntrack.stat").unlink()
    rc, doc = doctor(a, "--compare", str(b))
    (f,) = find(doc, "CT002")
    assert f["severity"] == "critical" and f["evidence"]["drop_per_second"] == 1.0  # (80-20)/60
    rc, _out, err = run_cli("doctor", "--compare", str(b))
    assert_one_line_error(rc, err, code=2, contains="--compare")


def test_help_stays_light():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "ctdoctor", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "doctor" in r.stdout
    heavy = [m for m in ("rich", "ctdoctor.sources.snapshot", "ctdoctor.sources.listing_files", "ipaddress", "pyroute2")
             if f"| {m}\n" in r.stderr or f"|   {m}\n" in r.stderr or f" {m}\n" in r.stderr]
    assert heavy == [], f"--help imported {heavy}"


def test_a_report_taller_than_the_terminal_goes_through_the_pager(tmp_path):
    import sys

    got = tmp_path / "paged"
    pager = f"{sys.executable} -c \"import sys; open('{got}', 'wb').write(sys.stdin.buffer.read())\""

    def run(*extra):
        return run_in_pty([sys.executable, "-m", "ctdoctor", "--root", str(RHEL7), *extra],
                          env={"LINES": "12", "PAGER": pager})[1]

    run()
    assert got.exists() and b"CRIT CT001" in got.read_bytes()  # 12 lines: paged
    got.unlink()
    shown = run("doctor", "--no-pager")
    assert not got.exists() and "CRIT CT001" in shown
    _rc, out, _err = run_cli("--root", str(RHEL7))  # piped: never paged
    assert "CRIT CT001" in out and not got.exists()
