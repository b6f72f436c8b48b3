"""``ctdoctor collect``: the bundle writer (a host image others can read offline)."""
