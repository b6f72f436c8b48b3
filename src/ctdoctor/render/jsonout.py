import json
import sys


def emit(doc, out=None) -> None:
    out = out or sys.stdout
    json.dump(doc, out, indent=2, sort_keys=False)
    out.write("\n")
