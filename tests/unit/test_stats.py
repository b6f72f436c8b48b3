"""Per-CPU stats across kernel generations, by header name."""

import pytest

from ctdoctor.sources.stats import StatsParseError, parse_conntrack_S, parse_proc_stat
from tests.conftest import DATA


def test_6x_header_from_this_kernel():
    st = parse_proc_stat((DATA / "proc_stat_nf_conntrack_6.18").read_text())
    assert len(st.per_cpu) == 2 and "chainlength" in st.columns and "clashres" in st.columns
    assert st.entries == 6
    assert "entries" not in st.sums, "entries is the netns count on every line, not a per-CPU counter"


def test_3_10_header_searched_and_delete_list():
    st = parse_proc_stat((DATA / "proc_stat_nf_conntrack_3.10").read_text())
    assert st.columns[1] == "searched" and "delete_list" in st.columns
    assert st.sums["drop"] == 0x11 + 0x0A
    assert st.sums["insert_failed"] == 4
    assert st.entries == 0xFFF0


def test_5_10_header_clashres_with_delete_list():
    st = parse_proc_stat((DATA / "proc_stat_nf_conntrack_5.10").read_text())
    assert st.columns[1] == "clashres" and "delete_list" in st.columns and "chainlength" not in st.columns
    assert st.sums["early_drop"] == 3 and st.sums["clashres"] == 7 and len(st.per_cpu) == 4


def test_conntrack_S_this_kernel_maps_names_to_proc_names():
    st = parse_conntrack_S((DATA / "conntrack_S_6.18").read_text())
    assert set(st.sums) >= {"clashres", "chainlength", "icmp_error", "drop", "early_drop"}


def test_conntrack_S_1_4_4():
    st = parse_conntrack_S((DATA / "conntrack_S_1.4.4").read_text())
    assert st.sums["drop"] == 27 and st.sums["insert_failed"] == 4 and st.sums["searched"] == 192834 + 182733


@pytest.mark.parametrize("text", ["", "\x00\x01\x02binary", "entries searched\n0000 zz\n",
                                  "entries  clashres found\n00000001 00000002\n",  # truncated row
                                  "ipv4     2 tcp      6 431999 ESTABLISHED src=127.0.0.1"])
def test_bad_proc_stat(text):
    with pytest.raises(StatsParseError):
        parse_proc_stat(text)


@pytest.mark.parametrize("text", ["", "hello world", "cpu=0 found=abc"])
def test_bad_conntrack_S(text):
    with pytest.raises(StatsParseError):
        parse_conntrack_S(text)
