"""The nft ruleset read through libnftables (the library the ``nft`` command is built on), in-process.

Reading a namespace's rules with ``nft -j list ruleset`` costs a fork, an exec and the library's own
start-up, about 5 ms; the same call through the library, in the child that already entered the netns
to read its files, costs 0.1 ms. On a node with hundreds of pods that is most of the doctor's time.
The library is loaded once, before forking; where it is missing the ``nft`` command is run as before.
"""

from __future__ import annotations

import ctypes
import os

NFT_CTX_OUTPUT_JSON = 1 << 4  # libnftables.h: enum nft_output_flags
_lib: ctypes.CDLL | None = None
_tried = False


def load() -> bool:
    """Load libnftables once (call before forking: children inherit it). False when it is missing."""
    global _lib, _tried
    if _tried:
        return _lib is not None
    _tried = True
    if os.geteuid() != 0:  # without CAP_NET_ADMIN the library prints to stderr (and old ones exit): not used
        return False
    try:
        lib = ctypes.CDLL("libnftables.so.1")
    except OSError:
        return False
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error", "nft_ctx_free"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    _lib = lib
    return True


def ruleset_json() -> str | None:
    """``nft -j list ruleset`` of the calling task's netns; None when the library is not loaded or the
    listing failed (no permission: the caller then says what it could not read)."""
    lib = _lib
    if lib is None:
        return None
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        return None
    try:
        lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        if lib.nft_run_cmd_from_buffer(ctx, b"list ruleset") != 0:
            return None
        out = lib.nft_ctx_get_output_buffer(ctx)
        return out.decode("utf-8", "replace") if out is not None else None
    finally:
        lib.nft_ctx_free(ctx)
