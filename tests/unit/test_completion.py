"""`ctdoctor completion bash|zsh|fish|man`: generated from the parser, so every command and option the
program has is offered, and the man page renders cleanly. Bash completion is run for real."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import run_cli


def complete(script: str, *words: str) -> list[str]:
    """What bash offers after ``ctdoctor WORDS`` (the last word is the one being completed)."""
    line = " ".join(["ctdoctor", *words])
    test = (script + f"\nCOMP_WORDS=(ctdoctor {' '.join(repr(w) if w else repr('') for w in words)})\n"
            f"COMP_CWORD={len(words)}\nCOMP_LINE={line!r}\n_ctdoctor\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    p = subprocess.run(["bash", "-c", test], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


@pytest.fixture(scope="module")
def bash_script() -> str:
    rc, out, err = run_cli("completion", "bash")
    assert rc == 0, err
    return out


def test_bash_completes_commands_options_choices_and_codes(bash_script):
    assert subprocess.run(["bash", "-n", "-c", bash_script]).returncode == 0
    assert complete(bash_script, "sta") == ["status"]
    assert set(complete(bash_script, "")) >= {"doctor", "status", "top", "flush", "exporter", "completion"}
    assert "--include-established" in complete(bash_script, "flush", "--incl")
    assert complete(bash_script, "--format", "") == ["text", "json", "nagios", "csv"]
    assert complete(bash_script, "exporter", "--compat", "") == ["node"]
    assert complete(bash_script, "explain", "CT01") == [f"CT01{i}" for i in range(10)]
    assert "CT021" in complete(bash_script, "doctor", "--only", "")
    # an option whose values differ between commands is not offered a wrong one
    assert "both" not in complete(bash_script, "top", "--proto", "")
    assert "--web.listen-address" in complete(bash_script, "exporter", "--web.l")


def test_every_option_of_every_command_is_in_the_completion(bash_script):
    from ctdoctor.commands.completion import model

    m = model()
    for name, c in m["commands"].items():
        for o, _ in c["options"]:
            assert o in complete(bash_script, name, o[:3]), (name, o)


@pytest.mark.parametrize("shell,check", [("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])])
def test_zsh_and_fish_scripts(shell, check):
    rc, out, err = run_cli("completion", shell)
    assert rc == 0 and "ctdoctor" in out, err
    if shell == "fish":
        assert "complete -c ctdoctor -n 'not __fish_seen_subcommand_from" in out and "-l web.config.file -r -F" in out
    else:
        assert out.startswith("#compdef ctdoctor") and "complete -F _ctdoctor ctdoctor" in out
    if shutil.which(check[0]) is None:
        pytest.skip(f"{check[0]} not installed: the script is checked by its shape only")
    p = subprocess.run([*check], input=out, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_the_man_page_renders_without_warnings_and_names_every_command_and_check():
    rc, out, err = run_cli("completion", "man")
    assert rc == 0, err
    assert out.startswith(".TH CTDOCTOR 1")
    if shutil.which("groff") is None:
        pytest.skip("groff not installed")
    p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=out, capture_output=True, text=True)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
    text = subprocess.run(["groff", "-man", "-Tascii", "-P-c", "-P-b", "-P-u"], input=out, capture_output=True,
                          text=True).stdout
    from ctdoctor.cli import COMMANDS

    for name in COMMANDS:
        assert f"\n   {name}\n" in text or f"   {name}\n" in text, name
    assert "CT021" in text and "EXIT STATUS" in text and "--web.config.file" in text
