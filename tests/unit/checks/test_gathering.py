"""The facts are gathered before the checks run, and the checks get plain data only."""

from pathlib import Path

import pytest

from ctdoctor.diagnose import doctor
from ctdoctor.diagnose.checks import MODULES
from ctdoctor.diagnose.facts import Gathering, context, gather
from ctdoctor.errors import CheckFailed
from ctdoctor.model.snapshot import NetnsState
from ctdoctor.sources import hostfacts, snapshot
from ctdoctor.sources.hostroot import HostRoot

from . import build

IMAGES = Path(__file__).parent.parent.parent / "images"


def image_context() -> Gathering:
    root = HostRoot.open(str(IMAGES / "sosreport-node7-k8s"))
    return context(snapshot.build(root, "all"), root)


def test_checks_see_plain_states_and_every_fact_they_need_is_read_first():
    ctx = image_context()
    plain = gather(ctx, list(MODULES))
    assert all(type(st) is NetnsState for st in plain.snap.namespaces)
    assert not hasattr(plain, "reader") and plain.snap.notes is ctx.snap.notes
    wanted = {st.name for st in ctx.snap.namespaces if ctx.listing_matters(st)}
    assert wanted and wanted <= set(plain.facts.summaries)
    for code in MODULES:  # on plain data alone, none asks for a fact that was not gathered
        build.run(code, plain)


def test_only_the_listings_the_selected_checks_need_are_read():
    ctx = image_context()
    gather(ctx, ["CT005", "CT017"])
    assert ctx.facts.summaries == {}


def test_progress_names_each_listing_read():
    root = HostRoot.open(str(IMAGES / "sosreport-node7-k8s"))
    said: list[str] = []
    ctx = context(snapshot.build(root, "all"), root, progress=said.append)
    gather(ctx, ["CT012"])
    n = len(said)
    assert n and all(s.startswith("reading the listing of netns ") for s in said)
    assert sorted(s.rsplit("(", 1)[1] for s in said) == sorted(f"{i}/{n})" for i in range(1, n + 1))


def test_an_expected_read_failure_is_not_enough_data_with_its_reason(monkeypatch):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(hostfacts, "listing_summary", denied)
    ctx = image_context()
    plain = gather(ctx, ["CT012"])
    assert set(plain.facts.summaries.values()) == {None}
    assert all("PermissionError" in r for r in plain.facts.summary_errors.values())


def test_a_bug_while_reading_is_not_swallowed(monkeypatch):
    def bug(*a, **k):
        raise ValueError("a bug")

    monkeypatch.setattr(hostfacts, "listing_summary", bug)
    with pytest.raises(ValueError):
        gather(image_context(), ["CT012"])


def test_a_check_asking_for_a_fact_not_gathered_fails_the_run():
    ctx = build.context(build.snapshot(build.ns(count=250000)))  # plain: CT001 wants the plan's max
    with pytest.raises(CheckFailed, match="CT001"):
        doctor.run_checks(ctx, {"CT001"})


def test_the_plain_snapshot_keeps_every_fact_and_no_view():
    from dataclasses import fields

    from ctdoctor.model.snapshot import Snapshot

    ctx = image_context()
    plain = ctx.snap.plain()
    for f in fields(Snapshot):
        if f.name != "namespaces":
            assert getattr(plain, f.name) is getattr(ctx.snap, f.name), f.name
    for read, st in zip(ctx.snap.namespaces, plain.namespaces, strict=True):
        assert hasattr(read, "view") and not hasattr(st, "view")
        assert all(getattr(st, f.name) is getattr(read, f.name) for f in fields(NetnsState))
