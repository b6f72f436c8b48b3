"""Watching over time: the Prometheus exporter, its HTTP server, ``record`` and ``top --rate``."""
