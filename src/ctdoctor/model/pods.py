"""The Kubernetes pod that holds a network namespace (found by ``sources.pods``)."""

from __future__ import annotations

from typing import NamedTuple


class Pod(NamedTuple):
    namespace: str
    name: str
    uid: str
    container: str = ""  # the container whose process holds the netns ("" for the sandbox / pause)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name
