"""Rule summaries from nft JSON, nft text, iptables-save and iptables -nvL."""


import pytest

from ctdoctor.sources.firewall import (
    RulesParseError,
    parse_iptables_list,
    parse_iptables_save,
    parse_nft_json,
    parse_nft_text,
)
from tests.conftest import IMAGES, Netns, needs_kernel

RHEL7 = IMAGES / "sosreport-gw01-rhel7"
K8S = IMAGES / "sosreport-node7-k8s"


def test_iptables_save():
    s = parse_iptables_save((RHEL7 / "etc/sysconfig/iptables").read_text(), "/etc/sysconfig/iptables")
    assert len(s.nat) == 2 and len(s.ct_state) == 2 and not s.notrack and not s.untracked_accept


def test_iptables_save_notrack_forms():
    text = ("*raw\n-A PREROUTING -p udp --dport 53 -j NOTRACK\n-A OUTPUT -p udp --sport 53 -j CT --notrack\n"
            "COMMIT\n*filter\n-A INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT\n"
            "-A INPUT -p tcp --dport 80 -j NFQUEUE --queue-num 1\nCOMMIT\n")
    s = parse_iptables_save(text, "x")
    assert len(s.notrack) == 2 and len(s.untracked_accept) == 1 and len(s.nfqueue) == 1


def test_iptables_nvL_table():
    s = parse_iptables_list((RHEL7 / "sos_commands/firewall_tables/iptables_-t_nat_-nvL").read_text(), "x")
    assert len(s.nat) == 2


def test_nft_text_from_sosreport():
    s = parse_nft_text((K8S / "sos_commands/firewall_tables/nft_-a_list_ruleset").read_text(), "x")
    assert len(s.nat_chains) == 2 and len(s.nat) == 2 and len(s.ct_state) == 1


def test_nft_text_queue_and_notrack():
    s = parse_nft_text("table inet raw {\n chain pre {\n  type filter hook prerouting priority raw;\n"
                       "  udp dport 53 notrack\n  tcp dport 9 queue num 3\n }\n}\n", "x")
    assert len(s.notrack) == 1 and len(s.nfqueue) == 1


def test_nft_json_rejects_junk():
    with pytest.raises(RulesParseError):
        parse_nft_json("not json", "x")
    with pytest.raises(RulesParseError):
        parse_nft_json('{"other": 1}', "x")


@needs_kernel
def test_nft_json_from_this_nft():
    with Netns() as ns:
        ns.run("nft", "add table ip nat; add chain ip nat out { type nat hook output priority -100; };"
                      "add rule ip nat out tcp dport 80 dnat to 127.0.0.1:8080;"
                      "add table inet raw; add chain inet raw pre { type filter hook prerouting priority -300; };"
                      "add rule inet raw pre udp dport 53 notrack;"
                      "add chain inet raw in { type filter hook input priority 0; };"
                      "add rule inet raw in ct state untracked accept")
        text = ns.run("nft", "-j", "list", "ruleset").stdout.decode()
    s = parse_nft_json(text, "nft -j list ruleset")
    assert len(s.nat_chains) == 1 and len(s.nat) == 1 and len(s.notrack) == 1
    assert len(s.untracked_accept) == 1 and len(s.ct_state) >= 1  # this kernel has no nft queue support
