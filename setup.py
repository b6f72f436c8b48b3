"""Build hook for the optional C accelerator (ctdoctor.listing._fastscan).

optional=True: if there is no compiler, ctdoctor installs without it and
`top` uses its pure-Python aggregator, which gives identical results.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("ctdoctor.listing._fastscan", ["src/ctdoctor/listing/_fastscan.c"], optional=True,
                             extra_compile_args=["-O2"])])
