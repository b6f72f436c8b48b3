"""Renderers: findings, tables and series to text (rich), JSON, Nagios or Prometheus."""
