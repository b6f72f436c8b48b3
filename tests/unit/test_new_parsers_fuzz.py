"""The parsers added for real hosts and Kubernetes nodes never raise on junk: mutated real samples
(the corpus's logs and rule listings, kubelet cgroup lines, runtime specs, sos ``date``/``uptime``)
come back as data or as "nothing here", never as an exception."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ctdoctor.sources import firewall, kernlog, pods, system

CORPUS = Path(__file__).parent.parent / "realworld"


def _samples(pattern: str, limit: int = 40) -> list[str]:
    out = []
    for p in sorted(CORPUS.glob(pattern))[:limit]:
        if p.is_file():
            out.append(p.read_text(errors="replace")[:20000])
    return out


LOGS = _samples("*/var/log/*") + _samples("*/sos_commands/kernel/dmesg")
RULES = _samples("*/sos_commands/firewall_tables/*") + _samples("*/etc/sysconfig/iptables")
SPEC = json.dumps({"annotations": {"io.kubernetes.cri.sandbox-name": "web-0", "io.kubernetes.cri.sandbox-namespace":
                                   "shop", "io.kubernetes.cri.sandbox-uid": "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"},
                   "linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/cni-77aa"}]}})
CGROUP = ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b"
          ".slice/cri-containerd-" + "ab" * 32 + ".scope\n")


def mutate(text: str, data) -> str:
    """Cut, splice, flip and repeat pieces of a real sample."""
    if not text:
        return text
    ops = data.draw(st.lists(st.integers(0, 4), max_size=6))
    for op in ops:
        i = data.draw(st.integers(0, max(len(text) - 1, 0)))
        if op == 0:
            text = text[:i]
        elif op == 1:
            text = text[:i] + data.draw(st.text(max_size=40)) + text[i:]
        elif op == 2:
            text = text[:i] + text[i + data.draw(st.integers(1, 50)):]
        elif op == 3:
            text = text[i:] + text[:i]
        else:
            text = text[:i] + text[i:i + 80] * data.draw(st.integers(1, 5)) + text[i + 80:]
    return text


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_kernel_log_parser(data):
    text = mutate(data.draw(st.sampled_from(LOGS)), data)
    ref = data.draw(st.one_of(st.none(), st.floats(0, 4e9)))
    evs = kernlog.parse_kernel_log(text, data.draw(st.sampled_from(["dmesg", "/var/log/messages-20240301"])), ref)
    kernlog.assign_boots(evs, data.draw(st.one_of(st.none(), st.floats(0, 4e9))))
    out, dropped = kernlog.dedupe(evs)
    assert len(out) + dropped == len(evs)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_rule_parsers(data):
    text = mutate(data.draw(st.sampled_from(RULES)), data)
    for parse in (firewall.parse_iptables_list, firewall.parse_iptables_save, firewall.parse_nft_text):
        s = parse(text, "sos_commands/firewall_tables/iptables_-t_raw_-nvL")
        for r in s.rules:
            r.may_match("udp", frozenset({53}), "untracked")
            r.surely_matches(None, None, "untracked")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_pod_and_host_fact_parsers(data):
    pods.parse_runtime_spec(mutate(SPEC, data))
    pods.parse_cgroup(mutate(CGROUP, data))
    pods.parse_pod_log_dirs(mutate("shop_web-0_0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b\nx_y\n", data).split())
    pods.netns_name_of(mutate("/var/run/netns/cni-77aa", data))
    system.parse_date_output(mutate("Tue Mar 12 10:00:01 UTC 2024\n", data))
    system.parse_uptime_output(mutate(" 10:00:01 up 3 days,  2:11,  1 user,  load average: 0.10\n", data))
    kernlog.rotated_logs(mutate("messages messages-20240301 kern.log.2.gz syslog.1", data).split())
