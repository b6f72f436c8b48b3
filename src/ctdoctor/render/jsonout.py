"""A document as JSON on stdout (or ``out``), indented, in the order it was built."""

from __future__ import annotations

import json
import sys
from typing import IO, Any


def emit(doc: Any, out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    json.dump(doc, out, indent=2, sort_keys=False)
    out.write("\n")
