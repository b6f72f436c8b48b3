"""`make wheel`'s command builds a wheel that carries the C scanner and the typing and schema files.

Not unit tests: they build a wheel with pip (seconds of compiling), so they sit here, outside
tests/unit; `make test` runs them (``-m "not build"`` leaves them out)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent
pytestmark = pytest.mark.build


def test_the_wheel_carries_the_c_scanner(tmp_path):
    from ctdoctor.listing.accel import accelerated

    if not accelerated():
        pytest.skip("no compiler here: the wheel would be pure Python")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (whl,) = tmp_path.glob("ctdoctor-*.whl")
    assert "-linux_" in whl.name or "manylinux" in whl.name  # a binary wheel, not py3-none-any
    names = zipfile.ZipFile(whl).namelist()
    assert any(n.startswith("ctdoctor/listing/_fastscan") and n.endswith(".so") for n in names)
    for must in ("ctdoctor/py.typed", "ctdoctor/listing/_fastscan.pyi", "ctdoctor/schemas/doctor.schema.json"):
        assert must in names


def test_the_installed_wheel_runs_top_with_its_c_scanner(tmp_path):
    """What a host without a compiler does: install the wheel (no build step) and run it."""
    from ctdoctor.listing.accel import accelerated

    if not accelerated():
        pytest.skip("no compiler here: the wheel would be pure Python")
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (whl,) = wheels.glob("ctdoctor-*.whl")
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                        str(whl)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}  # the wheel's copy first, no compiler needed

    def ctd(*args):
        return subprocess.run([sys.executable, "-m", "ctdoctor", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)

    where = subprocess.run([sys.executable, "-c", "import ctdoctor.listing._fastscan as f; print(f.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    v = ctd("--version")
    assert v.returncode == 0 and "(C scanner)" in v.stdout
    t = ctd("top", "--by", "dport", "--file", str(ROOT / "tests/data/proc_nf_conntrack_6.18"), "--format", "json")
    assert t.returncode == 0, t.stderr
    assert '"total":' in t.stdout
