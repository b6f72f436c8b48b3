"""A mistyped value of an enum-valued option is one line with the value meant (exit 2), said once."""

from __future__ import annotations

import contextlib
import io

import pytest

from ctdoctor.commands.common import did_you_mean, no_such
from tests.conftest import IMAGES, run_cli


def run(*argv: str) -> tuple[int, str, str]:
    from ctdoctor import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("argv", "said"), [
    (["--format", "jsn", "status"], "--format: no format 'jsn'; did you mean 'json'?"),
    (["status", "--format", "JSON"], "--format: no format 'JSON'; did you mean 'json'?"),
    (["--color", "allways", "status"], "--color: no color 'allways'; did you mean 'always'?"),
    (["completion", "bsh"], "no shell 'bsh'; did you mean 'bash'?"),
    (["explain", "CT0013"], "no check 'CT0013'; did you mean 'CT013'?"),
    (["explain", "ct13"], "no check 'ct13'; did you mean 'CT013'?"),
])
def test_a_mistyped_value_gets_the_one_meant(argv, said):
    rc, out, err = run(*argv)
    assert rc == 2 and not out
    assert err == f"ctdoctor: error: {said}\n"


def test_a_value_with_nothing_near_lists_the_choices_once():
    rc, _out, err = run("--format", "yaml", "status")
    assert rc == 2 and err.count("\n") == 1 and "usage:" not in err  # not twice (the pre-parse stays quiet)
    assert "no format 'yaml' (one of: text, json, nagios, csv)" in err


def test_a_mistyped_netns_in_an_image():
    from tests.conftest import IMAGES

    k8s = str(IMAGES / "sosreport-node7-k8s")
    rc, out, err = run("--root", k8s, "--netns", "cni-4f1x", "status")
    assert rc == 2 and not out and err == "ctdoctor: error: no netns 'cni-4f1x'; did you mean 'cni-4f1e'?\n"
    rc, _out, err = run("--root", k8s, "--netns", "init,zzzz", "status")  # a list: the bad one is named
    assert rc == 2 and "--netns zzzz: no such network namespace" in err and "known: init, cni-4f1e" in err


def test_the_helpers():
    assert did_you_mean("cni-4f1x", ["init", "cni-4f1e"]) == "cni-4f1e"
    assert did_you_mean("established", ["ESTABLISHED", "SYN_SENT"]) == "ESTABLISHED"
    assert did_you_mean("zzz", ["init"]) is None
    assert str(no_such("netns", "cni-4f1x", ["init", "cni-4f1e"])) == "no netns 'cni-4f1x'; did you mean 'cni-4f1e'?"
    assert str(no_such("netns", "x", ["init"], see="ip netns")) == "no netns 'x' (see: ip netns)"
    assert no_such("netns", "x", ["init"]).exit_code == 2


def test_a_mistyped_protocol_or_key_of_top_names_the_one_meant():
    """``--proto tpc`` once matched nothing and printed an empty table; ``--by srcc`` listed the keys."""
    rc, out, err = run_cli("--root", str(IMAGES / "sosreport-node7-k8s"), "top", "--proto", "tpc")
    assert rc == 2 and not out and err == "ctdoctor: error: no protocol 'tpc'; did you mean 'tcp'?\n"
    rc, out, err = run_cli("--root", str(IMAGES / "sosreport-node7-k8s"), "top", "--by", "srcc")
    assert rc == 2 and not out and err == "ctdoctor: error: no --by key 'srcc'; did you mean 'src'?\n"
    rc, out, _ = run_cli("--root", str(IMAGES / "sosreport-node7-k8s"), "top", "--proto", "132", "--format", "json")
    assert rc == 0 and out  # a protocol number is a protocol
