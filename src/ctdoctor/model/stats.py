"""Per-CPU conntrack statistics as data (parsed by ``sources.stats``)."""

from __future__ import annotations

from dataclasses import dataclass, field

NOT_SUMMED = {"entries"}


@dataclass
class CpuStats:
    per_cpu: list[dict[str, int]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    entries: int | None = None  # the count printed in the "entries" column
    source: str = ""

    @property
    def sums(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.per_cpu:
            for k, v in row.items():
                if k not in NOT_SUMMED:
                    out[k] = out.get(k, 0) + v
        return out
