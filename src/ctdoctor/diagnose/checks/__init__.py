"""The check catalogue: one module per check, found by code (model: ruff's rules).

Each module has ``CODE``, ``TITLE`` and ``run(ctx)``; its docstring, with the
sections *What it detects*, *Why it matters* and *How to fix*, is the page
``ctdoctor explain CODE`` prints.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = {
    "CT001": "ct001_table_full", "CT002": "ct002_drops", "CT003": "ct003_early_drop",
    "CT004": "ct004_count_mismatch", "CT005": "ct005_nat_without_conntrack", "CT006": "ct006_settings_drift",
    "CT007": "ct007_unload_hazard", "CT008": "ct008_modprobe_install", "CT009": "ct009_hash_sizing",
    "CT010": "ct010_memory", "CT011": "ct011_timeouts", "CT012": "ct012_state_anomalies",
    "CT013": "ct013_heavy_hitter", "CT014": "ct014_sockets", "CT015": "ct015_holders",
    "CT016": "ct016_notrack_accept", "CT017": "ct017_liberal", "CT018": "ct018_netns_near_max",
    "CT019": "ct019_expect_full", "CT020": "ct020_no_effect_keys", "CT021": "ct021_tunnel_tracked",
}


def load(code: str) -> ModuleType:
    return importlib.import_module(f"ctdoctor.diagnose.checks.{MODULES[code]}")


def page(mod: ModuleType) -> str:
    doc = (mod.__doc__ or "").strip()
    return f"{mod.CODE} {mod.TITLE}\n\n{doc}\n"
