"""The services the commands call (issue 21: commands parse, call one service and render)."""

from __future__ import annotations

import argparse

from ctdoctor.diagnose import doctor
from ctdoctor.model.snapshot import NetnsState, Snapshot
from ctdoctor.model.stats import CpuStats
from ctdoctor.sources import snapshot


def _snap(drop: int, captured_at: float | None) -> Snapshot:
    snap = Snapshot("bundle", "img")
    snap.captured_at = captured_at
    for i, name in enumerate(("init", "pod-a", "pod-b")):
        snap.namespaces.append(NetnsState(name, 4026531840 + i, stats=CpuStats([{"drop": drop}], ["drop"])))
    return snap


def test_compare_without_capture_times_says_its_note_once(monkeypatch):
    """--compare over images that carry no capture time: one note for the run, not one per netns."""
    first, later = _snap(10, None), _snap(40, None)
    monkeypatch.setattr(snapshot, "build", lambda *a, **k: later)
    doctor._compare(first, None, "all")  # type: ignore[arg-type]
    assert [n for n in first.notes if n.startswith("--compare")] == [
        "--compare: the images carry no capture time; rates are per comparison, not per second"]
    assert all(st.interval == 1.0 and st.rates() == {"drop": 30.0} for st in first.namespaces)


def test_compare_with_capture_times_gives_per_second_rates_and_no_note(monkeypatch):
    first, later = _snap(10, 1000.0), _snap(40, 1060.0)
    monkeypatch.setattr(snapshot, "build", lambda *a, **k: later)
    doctor._compare(first, None, None)  # type: ignore[arg-type]
    assert first.notes == []
    assert all(st.rates() == {"drop": 0.5} for st in first.namespaces)


def test_doctor_command_refuses_a_negative_interval_and_compare_on_the_live_host(tmp_path):
    import pytest

    from ctdoctor.errors import UsageError
    from ctdoctor.sources.hostroot import HostRoot

    live = HostRoot.open(None)
    with pytest.raises(UsageError, match="--interval"):
        doctor.diagnose(live, interval=-1)
    with pytest.raises(UsageError, match="--compare"):
        doctor.diagnose(live, compare=str(tmp_path))


def test_lab_takes_the_global_options_without_the_cli():
    """commands/lab.py adds the global options to its sub-commands from commands.common, not from cli."""
    import ast
    from pathlib import Path

    import ctdoctor.commands.lab as labcmd
    from ctdoctor.commands.common import global_options

    tree = ast.parse(Path(labcmd.__file__).read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "ctdoctor.cli" not in names
    p = global_options(argparse.ArgumentParser())
    assert p.parse_args(["--format", "json"]).format == "json"
    assert not hasattr(p.parse_args([]), "format")  # suppressed: the value given before the command stays
