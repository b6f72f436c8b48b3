"""Is the optional C extension (``ctdoctor._fastscan``) there, and wanted?"""

from __future__ import annotations

import os


def accelerated() -> bool:
    """True when the C scanner is built and ``CTDOCTOR_NO_ACCEL`` is not set."""
    if os.environ.get("CTDOCTOR_NO_ACCEL"):
        return False
    try:
        from ctdoctor import _fastscan  # noqa: F401
    except ImportError:
        return False
    return True
