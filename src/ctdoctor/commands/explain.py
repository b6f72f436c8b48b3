"""ctdoctor checks / ctdoctor explain CT0NN."""

from __future__ import annotations

import argparse
import sys

from ctdoctor.commands.common import no_such
from ctdoctor.diagnose.checks import MODULES, load, page
from ctdoctor.render.jsonout import emit
from ctdoctor.render.page import catalogue, fit, terminal_width


def add_arguments(p: argparse.ArgumentParser) -> None:
    if p.prog.endswith("explain"):
        p.add_argument("code", metavar="CT0NN")


def run(args: argparse.Namespace) -> int:
    if args.command == "checks":
        if getattr(args, "format", None) == "json":
            emit({"schema": 1, "checks": [{"id": c, "title": load(c).TITLE} for c in MODULES]})
        else:
            sys.stdout.write(catalogue([(c, load(c).TITLE) for c in MODULES], terminal_width()))
        return 0
    code = args.code.upper()
    if code not in MODULES:
        raise no_such("check", args.code, MODULES, see="ctdoctor checks")
    sys.stdout.write(fit(page(load(code)), terminal_width()))
    return 0
