"""The numbers the C scanner and the Python one share: key field ids, scan-tuple slots, the key separator.

One place: ``fastscan/fastscan.h`` has the same ``enum { F_SRC, ... }``; a test holds them equal."""

from __future__ import annotations

from typing import Final

# key field ids (an aggregator's key is these fields joined by SEP), as fastscan/fastscan.h's enum
F_SRC, F_DST, F_SPORT, F_DPORT, F_STATE, F_PROTO, F_ZONE, F_MARK, F_RSRC, F_RDST, F_L3 = range(11)
NFIELDS = 11

# a scanned line's fields tuple, indexed by these (S_ACCT: a tuple had packets= or bytes=)
# (Final: each a literal, so a type checker knows the type of f[S_...])
S_L3: Final = 0
S_PROTO: Final = 1
S_LABEL: Final = 2
S_SRC: Final = 3
S_DST: Final = 4
S_SPORT: Final = 5
S_DPORT: Final = 6
S_RSRC: Final = 7
S_RDST: Final = 8
S_MARK: Final = 9
S_ZONE: Final = 10
S_UNREPLIED: Final = 11
S_ASSURED: Final = 12
S_OPK: Final = 13
S_OB: Final = 14
S_RPK: Final = 15
S_RB: Final = 16
S_ACCT: Final = 17

# the scan-tuple slot of each key field
FIELD_SLOT = {F_SRC: S_SRC, F_DST: S_DST, F_SPORT: S_SPORT, F_DPORT: S_DPORT, F_STATE: S_LABEL,
              F_PROTO: S_PROTO, F_ZONE: S_ZONE, F_MARK: S_MARK, F_RSRC: S_RSRC, F_RDST: S_RDST, F_L3: S_L3}

SEP = b"\x1f"  # between the values of a multi-field key
U64 = (1 << 64) - 1  # counters saturate here

# (l3, proto, label, src, dst, sport, dport, rsrc, rdst, mark, zone, unreplied, assured, opk, ob, rpk, rb, acct)
ScanFields = tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bool, bool,
                   int, int, int, int, bool]
