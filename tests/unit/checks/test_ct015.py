"""CT015 who holds nf_conntrack, on plain facts. It is information whenever the state is known."""

import pytest

from ctdoctor.diagnose.checks.base import INFO
from ctdoctor.model.modules import ModuleInfo, ModuleState

from .build import context, fired, ns, snapshot, unknown

CODE = "CT015"


def test_fires_with_the_holders_of_a_loaded_module():
    snap = snapshot(ns())
    snap.modules["nf_conntrack"] = ModuleInfo("nf_conntrack", ModuleState.LOADED, 3, ["nf_nat", "xt_conntrack"],
                                              source="/proc/modules")
    f = fired(CODE, context(snap), INFO, netns=None)
    assert f.evidence["holders"] == ["nf_nat", "xt_conntrack"] and f.evidence["refcount"] == 3


@pytest.mark.parametrize("state,words", [("builtin", "built into"), ("present", "no module list"),
                                         ("absent", "not loaded")])
def test_each_state_is_said(state, words):
    f = fired(CODE, context(snapshot(ns(), modules={"nf_conntrack": state})), INFO, netns=None)
    assert words in f.summary and f.evidence["state"] == state


def test_missing_module_data_is_not_enough_data():
    unknown(CODE, context(snapshot(ns(), modules={})), netns=None)
    unknown(CODE, context(snapshot(ns(), modules={"nf_conntrack": "unknown"})), netns=None)
