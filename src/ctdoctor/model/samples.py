"""What a scrape reads per netns: plain data the live readers (``sources.live``) build and the
exporter and ``record`` consume."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Sample:
    """One netns as a scrape reads it (cheap files only)."""

    netns: str
    inode: int
    owner: str = ""
    readable: bool = True
    namespace: str = ""  # the Kubernetes pod that holds it (empty off Kubernetes)
    pod: str = ""
    container: str = ""
    count: int | None = None
    stats: dict[str, int] | None = None  # summed over CPUs, proc column names
    error: str = ""
