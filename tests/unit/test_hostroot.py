"""HostRoot over directories and archives, sosreport naming, and hostile archives."""

import io
import os
import tarfile

import pytest

from ctdoctor.sources.hostroot import HostRoot, mangle_command
from tests.conftest import IMAGES, assert_one_line_error, run_cli

K8S = IMAGES / "sosreport-node7-k8s"


def test_sos_command_names():
    assert mangle_command("conntrack -L -o extended") == "conntrack_-L_-o_extended"
    assert mangle_command("ip netns exec cni-4f1e conntrack -S") == "ip_netns_exec_cni-4f1e_conntrack_-S"
    assert mangle_command("nft -a list ruleset") == "nft_-a_list_ruleset"
    assert mangle_command("/usr/sbin/iptables -t nat -nvL") == "iptables_-t_nat_-nvL"
    assert mangle_command("ss -peaonmi") == "ss_-peaonmi"


def test_sosreport_directory_and_tailed_capture():
    r = HostRoot.open(str(K8S))
    assert r.kind == "sosreport"
    cap = r.capture("conntrack", "conntrack -L -o extended", netns="cni-4f1e")
    assert cap.tailed and cap.source.startswith("sos_commands/conntrack/")
    assert r.capture("kernel", "lsmod") is None


def test_escaping_symlink_is_not_followed():
    r = HostRoot.open(str(K8S))
    assert r.read_text("sos_commands/kernel/escaping_link") is None


def _tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(data) if data is not None else None)


def _file(name, data=b"x"):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    return ti, data


def _link(name, target, sym=True):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.SYMTYPE if sym else tarfile.LNKTYPE
    ti.linkname = target
    return ti, None


def test_archive_of_one_sosreport_folder(tmp_path):
    arc = tmp_path / "sosreport-node7-2026-11-21-abcdef.tar.xz"
    with tarfile.open(arc, "w:xz") as tf:
        tf.add(K8S, arcname="sosreport-node7-2026-11-21-abcdef")
    r = HostRoot.open(str(arc))
    assert r.kind == "sosreport" and r.read_text("etc/hostname").strip() == "node7"


HOSTILE = {
    "dotdot": [_file("img/proc/x"), _file("img/../../escaped-dotdot")],
    "absolute": [_file("/tmp/escaped-absolute")],
    "symlink_out": [_file("img/proc/x"), _link("img/etc", "../../../tmp")],
    "hardlink_out": [_file("img/proc/x"), _link("img/proc/h", "../../etc/passwd", sym=False)],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_write_nothing_outside(tmp_path, kind):
    arc = tmp_path / f"{kind}.tar.gz"
    _tar(arc, HOSTILE[kind])
    tmp = tmp_path / "tmp"  # its own TMPDIR: other runs on this host unpack into /tmp at the same time
    tmp.mkdir()
    rc, _out, err = run_cli("--root", str(arc), "status", env={"TMPDIR": str(tmp)})
    assert_one_line_error(rc, err, code=2, contains="refusing to unpack")
    assert not os.path.exists("/tmp/escaped-absolute") and not os.path.exists(tmp_path.parent / "escaped-dotdot")
    leftover = os.listdir(tmp)
    assert not leftover, f"temporary unpack dir (or an escaped file) left behind: {leftover}"


def test_absolute_symlink_is_left_out_not_followed(tmp_path):
    arc = tmp_path / "abs.tar.gz"
    _tar(arc, [_file("img/proc/meminfo", b"MemTotal: 1 kB\n"), _link("img/proc/slabinfo", "/proc/slabinfo")])
    r = HostRoot.open(str(arc))
    assert r.read_text("proc/meminfo") == "MemTotal: 1 kB\n"
    assert r.read_text("proc/slabinfo") is None and not (r.path / "proc/slabinfo").is_symlink()


def test_huge_member_is_refused_before_unpacking(tmp_path):
    arc = tmp_path / "huge.tar.gz"
    _tar(arc, [_file("img/proc/meminfo", b"MemTotal: 1 kB\n"), _file("img/proc/big", b"\0" * (3 << 20))])
    rc, _out, err = run_cli("--root", str(arc), "status", env={"CTDOCTOR_ARCHIVE_MAX_MEMBER": str(1 << 20)})
    assert_one_line_error(rc, err, code=2, contains="over the per-member limit")


def test_too_many_members(tmp_path):
    arc = tmp_path / "many.tar.gz"
    _tar(arc, [_file(f"img/proc/f{i}") for i in range(50)])
    rc, _out, err = run_cli("--root", str(arc), "status", env={"CTDOCTOR_ARCHIVE_MAX_MEMBERS": "10"})
    assert_one_line_error(rc, err, code=2, contains="members")


@pytest.mark.parametrize("content,msg", [
    (b"\x1f\x8b\x08\x00garbage", "not a readable tar archive"),
    (os.urandom(4096), "not a readable tar archive"),
])
def test_corrupt_archives(tmp_path, content, msg):
    arc = tmp_path / "bad.tar.gz"
    arc.write_bytes(content)
    rc, _out, err = run_cli("--root", str(arc), "status")
    assert_one_line_error(rc, err, code=2)


def test_truncated_archive(tmp_path):
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        tf.add(K8S, arcname="img")
    data = good.read_bytes()
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(data[: len(data) // 2])
    rc, _out, err = run_cli("--root", str(bad), "status")
    assert_one_line_error(rc, err, code=2, contains="truncated or corrupt")


@pytest.mark.parametrize("what", ["missing", "plainfile", "emptydir"])
def test_bad_roots(tmp_path, what):
    p = tmp_path / what
    if what == "plainfile":
        p.write_text("hello")
    elif what == "emptydir":
        p.mkdir()
    rc, _out, err = run_cli("--root", str(p), "status")
    assert_one_line_error(rc, err, code=2)


@pytest.fixture
def open_tmp():
    """A temp dir other users can traverse (pytest's own is 0700)."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="ctdt-perm-")
    os.chmod(d, 0o755)
    yield __import__("pathlib").Path(d)
    for root, dirs, files in os.walk(d):
        for x in dirs + files:
            os.chmod(os.path.join(root, x), 0o700)
    shutil.rmtree(d, ignore_errors=True)


def test_unreadable_root(open_tmp):
    tmp_path = open_tmp
    p = tmp_path / "img"
    (p / "proc").mkdir(parents=True)
    p.chmod(0)
    rc, _out, err = run_cli("--root", str(p), "status", as_nobody=True)
    assert_one_line_error(rc, err, code=2, contains="permission denied")


def test_unreadable_files_become_a_note_not_a_crash(open_tmp):
    tmp_path = open_tmp
    img = tmp_path / "img"
    (img / "proc/sys/net/netfilter").mkdir(parents=True)
    (img / "proc/sys/net/netfilter/nf_conntrack_max").write_text("65536\n")
    (img / "proc/sys/net/netfilter/nf_conntrack_count").write_text("10\n")
    (img / "proc/slabinfo").write_text("secret")
    (img / "proc/slabinfo").chmod(0)
    for d in (img, img / "proc", img / "proc/sys", img / "proc/sys/net", img / "proc/sys/net/netfilter"):
        d.chmod(0o755)
    rc, out, err = run_cli("--root", str(img), "status", "--format", "json", as_nobody=True)
    assert rc == 0, err
    import json

    doc = json.loads(out)
    assert doc["namespaces"][0]["count"] == 10
    assert any("permission denied" in n and "/proc/slabinfo" in n for n in doc["notes"])
