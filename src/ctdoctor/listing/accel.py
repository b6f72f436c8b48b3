"""Is the optional C extension (``ctdoctor.listing._fastscan``) there, and wanted?"""

from __future__ import annotations

import os


def accelerated() -> bool:
    """True when the C scanner is built and ``CTDOCTOR_NO_ACCEL`` is not set."""
    if disabled():
        return False
    try:
        from ctdoctor.listing import _fastscan  # noqa: F401
    except ImportError:
        return False
    return True


def disabled() -> bool:
    """``CTDOCTOR_NO_ACCEL`` is set: the pure-Python scanner by choice."""
    return bool(os.environ.get("CTDOCTOR_NO_ACCEL"))
