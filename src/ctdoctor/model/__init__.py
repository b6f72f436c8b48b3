"""Shared plain types and kernel constants: what every layer may import; reads and writes nothing."""
