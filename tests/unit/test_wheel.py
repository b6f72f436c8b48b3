"""`make wheel`'s command builds a wheel that carries the C scanner and the typing and schema files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent


def test_the_wheel_carries_the_c_scanner(tmp_path):
    from ctdoctor.accel import accelerated

    if not accelerated():
        pytest.skip("no compiler here: the wheel would be pure Python")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (whl,) = tmp_path.glob("ctdoctor-*.whl")
    assert "-linux_" in whl.name or "manylinux" in whl.name  # a binary wheel, not py3-none-any
    names = zipfile.ZipFile(whl).namelist()
    assert any(n.startswith("ctdoctor/_fastscan") and n.endswith(".so") for n in names)
    for must in ("ctdoctor/py.typed", "ctdoctor/_fastscan.pyi", "ctdoctor/schemas/doctor.schema.json"):
        assert must in names
