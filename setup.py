"""Build hook for the optional C accelerator (ctdoctor.listing._fastscan).

optional=True: if there is no compiler, ctdoctor installs without it and
`top` uses its pure-Python aggregator, which gives identical results.
The sources are split by topic under src/ctdoctor/listing/fastscan/ (fastscan.h says which
file holds what); they build into the one extension module.
"""

from pathlib import Path

from setuptools import Extension, setup

HERE = "src/ctdoctor/listing/fastscan"
SOURCES = sorted(str(p) for p in Path(HERE).glob("*.c"))

setup(ext_modules=[Extension("ctdoctor.listing._fastscan", SOURCES, depends=[f"{HERE}/fastscan.h"], optional=True,
                             extra_compile_args=["-O2"])])
