"""Entry listings: /proc/net/nf_conntrack and conntrack -L in every form, on real samples."""

import gzip
import io

import pytest

from ctdoctor.errors import InputError
from ctdoctor.listing.entry import (
    EntryParseError,
    format_entry,
    iter_entries,
    numbered_lines,
    parse_line,
    parse_save_line,
)
from ctdoctor.sources.listing_files import iter_lines, open_listing
from tests.conftest import DATA


def entries(name):
    with open(DATA / name, "rb") as f:
        return list(iter_entries(iter_lines(f)))


def key(e):
    return (e.proto, e.state, e.orig.src, e.orig.dst, e.orig.sport, e.orig.dport, e.orig.icmp_id,
            e.reply.src, e.reply.dst, e.reply.sport, e.reply.dport, e.unreplied, e.assured, e.mark)


def test_proc_listing_from_this_kernel():
    es = entries("proc_nf_conntrack_6.18")
    assert len(es) == 6
    v6 = [e for e in es if e.l3 == "ipv6"]
    assert {e.orig.src for e in v6} == {"::1"}, "IPv6 printed in full form must come out compressed"
    tw = next(e for e in es if e.state == "TIME_WAIT")
    assert (tw.timeout, tw.orig.sport, tw.orig.dport, tw.assured, tw.zone, tw.use) == (120, 42944, 8080, True, 0, 2)
    udp = [e for e in es if e.proto == "udp"]
    assert all(e.unreplied and not e.assured and e.state is None for e in udp)
    icmp = next(e for e in es if e.proto == "icmp")
    assert (icmp.orig.icmp_type, icmp.orig.icmp_code, icmp.orig.icmp_id) == (8, 0, 38682)
    assert icmp.reply.icmp_type == 0


def test_proc_and_conntrack_listings_describe_the_same_entries():
    proc = sorted(map(key, entries("proc_nf_conntrack_6.18")))
    for name in ("conntrack_L_6.18", "conntrack_L_extended_6.18", "conntrack_L_extended_id_6.18"):
        assert sorted(map(key, entries(name))) == proc, name
    # -o save never prints the mark: everything else is the same, the mark is unknown (None), not 0
    save = entries("conntrack_L_save_6.18")
    assert all(e.mark is None for e in save)
    assert sorted(key(e)[:-1] for e in save) == sorted(k[:-1] for k in proc)


def test_save_listing_with_nat_reads_the_reply_from_g_and_n():
    """Captured on the lab kernel: DNAT writes -g (the reply's source), SNAT -n (the reply's destination)."""
    es = {e.orig.dport: e for e in entries("conntrack_L_save_nat_6.18")}
    dnat, snat = es[8888], es[5555]
    assert (dnat.reply.src, dnat.reply.dst, dnat.reply.sport) == ("127.0.0.2", "127.0.0.1", 9999)
    assert (snat.reply.src, snat.reply.dst) == ("127.0.0.1", "127.0.0.3")
    assert dnat.state == "ESTABLISHED" and dnat.assured and snat.unreplied


def test_ktimestamp_and_vendor_lines_parse():
    es = entries("conntrack_L_extended_id_ktimestamp_6.18")
    assert len(es) == 3 and {e.id for e in es} == {733665971, 783702801, 2497410931}
    assert {e.delta_time for e in es} == {1}
    es = entries("proc_nf_conntrack_keenetic")
    assert len(es) == 6 and sum(e.assured for e in es) == 4
    assert next(e for e in es if e.state == "SYN_SENT").unreplied


def test_conntrack_id_output_is_the_entry_id_not_the_icmp_id():
    es = entries("conntrack_L_extended_id_6.18")
    icmp = next(e for e in es if e.proto == "icmp")
    assert icmp.orig.icmp_id == 38682 and icmp.id == 4078458183


def test_accounting_and_delta_time():
    (e,) = entries("proc_nf_conntrack_acct_6.18")
    assert (e.orig.packets, e.orig.bytes, e.reply.packets, e.reply.bytes) == (3, 664, 2, 112)
    assert e.delta_time == 1


def test_kernel_format_variants():
    es = entries("proc_nf_conntrack_variants")
    off = es[0]
    assert off.timeout is None and off.state == "ESTABLISHED" and off.offload == "OFFLOAD"
    hw = es[1]
    assert hw.timeout is None and hw.state is None and hw.offload == "HW_OFFLOAD"
    z = es[2]
    assert (z.orig.zone, z.reply.zone, z.mark, z.zone) == (5, 7, 16, None)
    assert z.secctx == "system_u:object_r:unlabeled_t:s0" and z.unreplied
    gre = es[3]
    assert gre.proto == "gre" and gre.orig.srckey == 0 and gre.timeout == 179
    assert es[4].proto == "sctp" and es[4].state == "ESTABLISHED" and es[4].orig.dport == 36412
    assert es[5].proto == "udplite" and es[5].protonum == 136
    v6 = es[6]
    assert v6.orig.src == "2001:db8::1" and v6.reply.icmp_type == 129 and v6.zone == 3
    unk = es[7]
    assert unk.proto == "unknown" and unk.protonum == 2 and unk.orig.sport is None
    nat = es[8]
    assert nat.reply.src == "10.244.0.5" and nat.reply.sport == 6443 and nat.orig.packets == 10


def test_old_gre_print_conntrack():
    (e,) = entries("proc_nf_conntrack_gre_old")
    assert e.timeout == 29 and e.orig.srckey == 1 and e.reply.dstkey == 1
    assert e.extra["stream_timeout"] == "180"


def test_stderr_merged_into_an_entry_line_is_removed_and_the_line_rejoined():
    text = (DATA.parent / "images/sosreport-node7-k8s/sos_commands/conntrack/conntrack_-L_-o_extended").read_text()
    es = list(iter_entries(text.splitlines()))
    assert len(es) == 3
    assert es[2].reply.dst == "10.244.1.5" and es[2].reply.sport == 53 and es[2].state == "TIME_WAIT"


def test_render_inverse_of_parse_on_real_lines():
    for name in ("proc_nf_conntrack_6.18", "proc_nf_conntrack_variants", "proc_nf_conntrack_acct_6.18"):
        for ln in (DATA / name).read_text().splitlines():
            e = parse_line(ln)
            assert format_entry(e, "proc") == ln.rstrip(), name


def test_save_line_directions():
    e = parse_save_line("-A -t 29 -u UNSET -s ::1 -d ::1 -r ::1 -q ::1 -p udp --sport 43694 --dport 5353 "
                        "--reply-port-src 5353 --reply-port-dst 43694")
    assert e.unreplied and not e.assured and e.l3 == "ipv6" and e.reply.sport == 5353


@pytest.mark.parametrize("bad", [
    "",
    "garbage",
    "tcp 6 100 ESTABLISHED src=1.2.3.4",  # truncated: one tuple
    "entries  clashres found new invalid ignore delete chainlength insert",  # the stats file by mistake
    "ipv6 10 tcp 6 10 ESTABLISHED src=zzzz::1 dst=::1 sport=1 dport=2 src=::1 dst=::1 sport=2 dport=1 use=1",
    "tcp 6 10 ESTABLISHED src=1.2.3.4 dst=5.6.7.8 sport=x dport=2 src=5.6.7.8 dst=1.2.3.4 sport=2 dport=1",
])
def test_bad_lines_raise(bad):
    with pytest.raises(EntryParseError):
        parse_line(bad)


def test_bad_listing_names_the_line():
    text = (DATA / "proc_nf_conntrack_6.18").read_text() + "ipv4     2 tcp      6 431999 ESTABLISHED src=1.2\n"
    with pytest.raises(InputError, match=r"line 7"):
        list(iter_entries(text.splitlines()))


def test_binary_junk_is_an_input_error():
    junk = bytes(range(256)) * 8
    with pytest.raises(InputError, match="line 1"):
        list(iter_entries(iter_lines(io.BytesIO(junk))))


def test_stats_file_given_as_listing():
    with open(DATA / "proc_stat_nf_conntrack_6.18", "rb") as f, pytest.raises(InputError, match="line 1"):
        list(iter_entries(iter_lines(f)))


def test_empty_listing_is_zero_entries():
    assert list(iter_entries(iter_lines(io.BytesIO(b"")))) == []


def test_tailed_listing_skips_a_cut_first_line():
    text = (DATA.parent / "images/sosreport-node7-k8s/sos_strings/conntrack/"
            "ip_netns_exec_cni-4f1e_conntrack_-L_-o_extended.tailed").read_text()
    assert len(list(iter_entries(text.splitlines(), skip_first_partial=True))) == 2
    with pytest.raises(InputError):
        list(iter_entries(text.splitlines()))


def test_gzip_listing(tmp_path):
    p = tmp_path / "l.gz"
    p.write_bytes(gzip.compress((DATA / "conntrack_L_6.18").read_bytes()))
    with open_listing(str(p)) as f:
        assert len(list(iter_entries(iter_lines(f)))) == 6


def test_chunked_reading_keeps_lines_whole():
    data = (DATA / "proc_nf_conntrack_6.18").read_bytes() * 50
    lines = list(iter_lines(io.BytesIO(data), chunk=7))
    assert len(lines) == 300 and all(parse_line(ln) for ln in lines)


def test_clean_lines_drops_summary_line():
    assert [ln for _n, ln in numbered_lines(["conntrack v1.4.7 (conntrack-tools): 6 flow entries have been shown.",
                                             "x"])] == ["x"]
