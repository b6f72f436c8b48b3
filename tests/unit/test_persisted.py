"""sysctl.d(5) precedence, modprobe.d, modules-load.d, iptables-config."""

import os

from ctdoctor.sources.hostroot import HostRoot
from ctdoctor.sources.persisted import read_persisted


def write(root, rel, text):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_sysctl_d_precedence(tmp_path):
    write(tmp_path, "usr/lib/sysctl.d/50-default.conf", "net.netfilter.nf_conntrack_max = 100\n")
    write(tmp_path, "etc/sysctl.d/50-default.conf", "net.netfilter.nf_conntrack_max = 200\n")  # masks usr/lib's
    write(tmp_path, "run/sysctl.d/60-run.conf", "net.netfilter.nf_conntrack_tcp_timeout_time_wait = 30\n")
    write(tmp_path, "usr/lib/sysctl.d/99-late.conf",
          "net/netfilter/nf_conntrack_tcp_timeout_time_wait = 60\n-net.netfilter.nf_conntrack_buckets=1024\n")
    write(tmp_path, "lib/sysctl.d/10-early.conf", "net.netfilter.nf_conntrack_max = 50\n")
    write(tmp_path, "etc/sysctl.conf", "; comment\n# comment\nnet.ipv4.netfilter.ip_conntrack_max = 300\n")
    os.makedirs(tmp_path / "proc")
    p = read_persisted(HostRoot(tmp_path.resolve(), "bundle", str(tmp_path)))
    assert p.sysctl_files == ["/lib/sysctl.d/10-early.conf", "/etc/sysctl.d/50-default.conf",
                              "/run/sysctl.d/60-run.conf", "/usr/lib/sysctl.d/99-late.conf", "/etc/sysctl.conf"]
    assert p.sysctl["net.netfilter.nf_conntrack_max"].value == "300"  # sysctl.conf last, legacy name mapped
    assert p.sysctl["net.netfilter.nf_conntrack_max"].file == "/etc/sysctl.conf"
    tw = p.sysctl["net.netfilter.nf_conntrack_tcp_timeout_time_wait"]
    assert (tw.value, tw.file) == ("60", "/usr/lib/sysctl.d/99-late.conf")
    assert p.sysctl["net.netfilter.nf_conntrack_buckets"].ignore_errors


def test_dev_null_masks_a_vendor_file(tmp_path):
    write(tmp_path, "usr/lib/sysctl.d/50-x.conf", "net.netfilter.nf_conntrack_max = 100\n")
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    os.symlink("/dev/null", tmp_path / "etc/sysctl.d/50-x.conf")
    p = read_persisted(HostRoot(tmp_path.resolve(), "bundle", str(tmp_path)))
    assert "net.netfilter.nf_conntrack_max" not in p.sysctl and p.sysctl_files == []


def test_sysctl_conf_linked_from_sysctl_d_counts_once(tmp_path):
    write(tmp_path, "etc/sysctl.conf", "net.netfilter.nf_conntrack_max = 7\n")
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    os.symlink("../sysctl.conf", tmp_path / "etc/sysctl.d/99-sysctl.conf")
    p = read_persisted(HostRoot(tmp_path.resolve(), "bundle", str(tmp_path)))
    assert p.sysctl_files == ["/etc/sysctl.d/99-sysctl.conf"]


def test_modprobe_modules_load_udev_iptables_config(tmp_path):
    write(tmp_path, "etc/modprobe.d/ct.conf",
          "options nf_conntrack hashsize=65536 \\\n  expect_hashsize=1024\ninstall nf-conntrack /bin/true\n"
          "remove nf_conntrack /bin/false\nblacklist nf_nat\n# install x y\n")
    write(tmp_path, "etc/modules-load.d/ct.conf", "# load early\nnf_conntrack\n;x\n")
    write(tmp_path, "etc/udev/rules.d/50-ct.rules",
          'ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", RUN+="/usr/lib/systemd/systemd-sysctl '
          '--prefix=/net/netfilter"\n')
    write(tmp_path, "etc/sysconfig/iptables-config", 'IPTABLES_MODULES_UNLOAD="yes"\n#IPTABLES_SYSCTL_LOAD_LIST=".nf_conntrack"\n')
    p = read_persisted(HostRoot(tmp_path.resolve(), "bundle", str(tmp_path)))
    verbs = [(d.verb, d.module, d.args) for d in p.modprobe]
    assert verbs == [("options", "nf_conntrack", "hashsize=65536 expect_hashsize=1024"),
                     ("install", "nf_conntrack", "/bin/true"), ("remove", "nf_conntrack", "/bin/false"),
                     ("blacklist", "nf_nat", "")]
    assert p.modules_load == [("nf_conntrack", "/etc/modules-load.d/ct.conf")]
    assert len(p.udev_rules) == 1 and p.udev_rules[0][0] == "/etc/udev/rules.d/50-ct.rules"
    cfg = p.iptables_config["/etc/sysconfig/iptables-config"]
    assert cfg == {"IPTABLES_MODULES_UNLOAD": "yes"}
