"""ctdoctor checks / ctdoctor explain CT0NN."""

from __future__ import annotations

import argparse
import sys

from ctdoctor.diagnose.checks import MODULES, load, page
from ctdoctor.errors import UsageError
from ctdoctor.render.jsonout import emit


def add_arguments(p: argparse.ArgumentParser) -> None:
    if p.prog.endswith("explain"):
        p.add_argument("code", metavar="CT0NN")


def run(args: argparse.Namespace) -> int:
    if args.command == "checks":
        if getattr(args, "format", None) == "json":
            emit({"schema": 1, "checks": [{"id": c, "title": load(c).TITLE} for c in MODULES]})
        else:
            for c in MODULES:
                print(f"{c}  {load(c).TITLE}")
        return 0
    code = args.code.upper()
    if code not in MODULES:
        raise UsageError(f"unknown check {args.code!r} (see: ctdoctor checks)")
    sys.stdout.write(page(load(code)))
    return 0
