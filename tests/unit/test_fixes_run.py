"""Every command the doctor prints on a host image runs as printed (issue 18): the ctdoctor ones
against the same image (they carry its --root and the netns), every shell command parses with
bash -n, and a file it edits exists in the image. The fix model itself (fixes.py) in-process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ctdoctor.model.fixes import Fix, in_scope, lines, words
from tests.conftest import run_cli

TESTS = Path(__file__).parent.parent
IMAGES = sorted([p for p in (TESTS / "images").iterdir() if p.is_dir()]
                + [p for p in (TESTS / "realworld").iterdir() if p.is_dir()])


def test_a_check_line_becomes_words_a_comment_and_a_place():
    f = in_scope("ctdoctor top --netns pod-a --by src,dport   # who fills it", image="/x/sos", netns="pod-a")
    assert f.argv == ["ctdoctor", "--root", "/x/sos", "top", "--netns", "pod-a", "--by", "src,dport"]
    assert (f.comment, f.where, f.writes) == ("who fills it", "here", False)
    f = in_scope("ctdoctor status --interval 5", image="/x/sos", netns="pod-a")
    assert f.argv == ["ctdoctor", "--netns", "pod-a", "--root", "/x/sos", "status", "--interval", "5"]
    for line in ("sysctl -w net.netfilter.nf_conntrack_max=524288", "ctdoctor apply --max 524288",
                 "modprobe nf_conntrack", "ctdoctor recover", "sed -i '2s/^/#/' /etc/modprobe.d/x.conf"):
        f = in_scope(line, image="/x/sos", netns=None)
        assert f.where == "host" and f.writes, line
        assert in_scope(line, image=None, netns=None).where == "here"
    assert not in_scope("ctdoctor notrack --port 53 --proto udp", image=None, netns=None).writes
    assert in_scope("ctdoctor notrack --port 53 --proto udp --apply", image=None, netns=None).writes
    assert in_scope("ctdoctor flush --state UNREPLIED", image=None, netns=None).writes
    assert not in_scope("ctdoctor flush --state UNREPLIED --dry-run", image=None, netns=None).writes
    assert not in_scope("nft list ruleset", image=None, netns=None).writes


def test_shell_syntax_is_kept_as_written_and_advice_alone_is_no_command():
    f = Fix.parse("echo 'remove nf_conntrack /bin/false' > /etc/modprobe.d/keep.conf   # blocks modprobe -r")
    assert f.text() == "echo 'remove nf_conntrack /bin/false' > /etc/modprobe.d/keep.conf" and f.comment
    assert in_scope("echo x > /etc/a.conf", image=None, netns=None).writes
    f = Fix.parse("# or keep the modules loaded")
    assert f.argv == [] and f.comment == "or keep the modules loaded"
    assert Fix.parse("conntrack -L | grep 'dport=53 '").text() == "conntrack -L | grep 'dport=53 '"


def test_long_commands_break_between_words_and_paste_back_as_one():
    f = Fix.parse("sed -i 's/^#\\?IPTABLES_SYSCTL_LOAD_LIST=.*/IPTABLES_SYSCTL_LOAD_LIST=\".nf_conntrack\"/' "
                  "/etc/sysconfig/iptables-config")
    out = lines(f, 60)
    assert len(out) == 3 and all(ln.endswith(" \\") for ln in out[:-1])
    joined = " ".join(ln.strip().removeprefix("$ ").removesuffix(" \\") for ln in out)
    assert words(joined) == words(f.text())
    p = subprocess.run(["bash", "-c", 'printf "%s\\n" ' + "\\\n".join(ln.strip().removeprefix("$ ").removesuffix("\\")
                                                                     for ln in out).replace("sed -i ", "", 1)],
                       capture_output=True, text=True)
    assert p.stdout.splitlines() == f.argv[2:]  # the shell sees the same words


@pytest.mark.parametrize("image", IMAGES, ids=lambda p: p.name)
def test_every_printed_command_runs_as_printed(image):
    _rc, out, err = run_cli("--root", str(image), "--format", "json", timeout=120)
    assert out.strip(), err
    doc = json.loads(out)
    ran = 0
    for f in doc["findings"]:
        assert len(f["fixes"]) == len(f["fix"])
        for x in f["fixes"]:
            if not x["argv"]:
                continue
            p = subprocess.run(["bash", "-n", "-c", x["text"]], capture_output=True, text=True)
            assert p.returncode == 0, (f["id"], x["text"], p.stderr)
            if x["where"] == "host":
                # edits a file of that host: the image holds it (or its folder, for a new one)
                if x["argv"][0] == "sed" and x["writes"]:
                    target = image / x["argv"][-1].lstrip("/")
                    assert target.exists(), (f["id"], x["text"])
                # ctdoctor apply, for that host: its dry run over the image shows a change, never "nothing
                # to apply" (the fixes of CT006/CT007/CT008 used to say exactly that)
                if x["argv"][:2] == ["ctdoctor", "apply"]:
                    rc2, o2, e2 = run_cli("--root", str(image), *x["argv"][1:], timeout=120)
                    assert rc2 == 0 and "error" not in e2 and ("+++" in o2 or "nothing to change" in o2), \
                        (f["id"], x["text"], e2[-300:])
                    ran += 1
                continue
            if x["argv"][0] != "ctdoctor":
                continue
            assert "--root" in x["argv"] and str(image) in x["argv"], (f["id"], x["text"])
            rc2, _o, e2 = run_cli(*x["argv"][1:], timeout=120)
            assert rc2 in (0, 1, 2, 3) and "error:" not in e2 and "usage:" not in e2, (f["id"], x["text"], e2[-300:])
            ran += 1
    assert ran or not any(x["argv"][:1] == ["ctdoctor"] and x["where"] == "here"
                          for f in doc["findings"] for x in f["fixes"])
