"""sysctl, modules, system facts, kernel log."""

from ctdoctor.model import kernel
from ctdoctor.sources import kernlog, modules, sysctl, system
from tests.conftest import IMAGES

RHEL7 = IMAGES / "sosreport-gw01-rhel7"


def test_sysctl_a_with_stderr_inside_and_between_lines():
    text = (RHEL7 / "sos_commands/kernel/sysctl_-a").read_text()
    text = text.replace("net.netfilter.nf_conntrack_max = 65536",
                        'net.netfilter.nf_conntrack_max = 65sysctl: reading key "net.ipv6.conf.lo.stable_secret"\n536')
    kv = sysctl.parse_sysctl_a(text)
    assert kv["net.netfilter.nf_conntrack_max"] == "65536"
    assert kv["net.ipv4.ip_forward"] == "1"
    assert not any(k.startswith("sysctl") for k in kv)


def test_legacy_and_slash_names():
    assert kernel.canonical("net.ipv4.netfilter.ip_conntrack_max") == "net.netfilter.nf_conntrack_max"
    assert kernel.canonical("net.ipv4.netfilter.ip_conntrack_tcp_timeout_established") == \
        "net.netfilter.nf_conntrack_tcp_timeout_established"
    assert kernel.canonical("net/netfilter/nf_conntrack_max") == "net.netfilter.nf_conntrack_max"
    assert kernel.canonical("net.nf_conntrack_max") == "net.netfilter.nf_conntrack_max"


def test_lsmod_holders():
    mods = modules.parse_lsmod((RHEL7 / "sos_commands/kernel/lsmod").read_text())
    assert mods["nf_conntrack"].refcount == 5
    assert mods["nf_conntrack"].holders == ["nf_nat", "nf_nat_ipv4", "xt_conntrack", "nf_conntrack_ipv4"]
    assert mods["xt_conntrack"].holders == []


def test_proc_modules():
    text = ("nf_conntrack 172032 5 xt_conntrack,nf_nat,nf_conntrack_netlink, Live 0xffffffffc0a1b000\n"
            "nf_defrag_ipv6 24576 1 nf_conntrack, Live 0xffffffffc0a11000\n"
            "xt_conntrack 16384 3 - Live 0xffffffffc0a0c000\n")
    mods = modules.parse_proc_modules(text)
    assert mods["nf_conntrack"].holders == ["xt_conntrack", "nf_nat", "nf_conntrack_netlink"]
    assert mods["xt_conntrack"].holders == [] and mods["nf_defrag_ipv6"].refcount == 1


def test_kernel_release_and_meminfo_and_slab():
    assert system.parse_kernel_release("3.10.0-1160.el7.x86_64") == (3, 10, 0)
    assert system.parse_kernel_release("Linux h 6.18.2-1-default #1 SMP") == (6, 18, 2)
    assert system.parse_kernel_release("garbage") is None
    assert system.parse_meminfo("MemTotal:        3880244 kB\n")["MemTotal"] == 3880244 * 1024
    slabs = system.parse_slabinfo(
        "slabinfo - version: 2.1\n# name <active_objs> ...\n"
        "nf_conntrack          32     32    256   16    1 : tunables    0    0    0 : slabdata      2      2      0\n")
    assert system.conntrack_slab(slabs).objsize == 256
    old = system.parse_slabinfo("nf_conntrack_ffffffff81a2c440  1200   1260    312   26    2 : tunables 0 0 0\n")
    assert system.conntrack_slab(old).objsize == 312
    assert system.count_cpus(None, "0-3,8-9") == 6


def test_kernel_log_every_generation():
    text = (
        "[91877.442210] nf_conntrack: table full, dropping packet.\n"
        "Nov 20 03:14:07 gw01 kernel: ip_conntrack: table full, dropping packet.\n"
        "[ 5123.991871] nf_conntrack: nf_conntrack: table full, dropping packet\n"
        "[ 5123.991871] nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet\n"
        "2026-11-20T03:14:07.123456+00:00 node7 kernel: nf_conntrack: nf_conntrack: expectation table full\n"
        "[    2.5] nf_conntrack: falling back to vmalloc.\n"
        "[    3.1] nf_conntrack version 0.5.0 (16384 buckets, 65536 max)\n"
        "[    9.0] net_ratelimit: 312 callbacks suppressed\n"
        "[    9.1] unrelated line about eth0\n"
    )
    evs = kernlog.parse_kernel_log(text, "dmesg")
    kinds = [e.kind for e in evs]
    assert kinds == ["table_full"] * 4 + ["expect_full", "vmalloc_fallback", "version", "suppressed"]
    assert evs[3].netns_inode == 4026532177 and evs[2].netns_inode is None
    assert evs[1].when == "Nov 20 03:14:07" and evs[0].when == "91877.442210"
    assert evs[4].when.startswith("2026-11-20T03:14:07")
    assert (evs[6].buckets, evs[6].max) == (16384, 65536) and evs[7].suppressed == 312


def test_default_sizing_by_era():
    gib = 1 << 30
    assert kernel.default_sizing(24 * gib, (6, 18, 0)) == (262144, 262144)
    assert kernel.default_sizing(int(3.7 * gib), (3, 10, 0)) == (16384, 65536)
    assert kernel.default_sizing(16 * gib, (5, 4, 0)) == (65536, 262144)
    assert kernel.default_sizing(16 * gib, (6, 1, 0), hashsize=32768) == (32768, 262144)
    assert kernel.default_sizing(512 << 20, (6, 1, 0)) == (4096, 4096)
