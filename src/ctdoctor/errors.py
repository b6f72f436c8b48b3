"""Errors that end a command with a one-line message instead of a traceback."""

from __future__ import annotations

from collections.abc import Iterable


class CtdError(Exception):
    """Base: the message is shown as one line; `exit_code` is the process status."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class UsageError(CtdError):
    """Bad flags or arguments (exit 2)."""

    exit_code = 2


class InputError(CtdError):
    """A file, archive or listing we were given cannot be used (exit 2)."""

    exit_code = 2


class NeedsLiveKernel(UsageError):
    """The command needs the running kernel but was given a host image."""


class Failure(CtdError):
    """The command ran but could not do its job (exit 1)."""

    exit_code = 1


class CheckFailed(CtdError):
    """A check raised: a bug in ctdoctor, never 'not enough data' (exit 3, UNKNOWN for Nagios)."""

    exit_code = 3


# ---- a mistyped value: the one meant ----------------------------------------------


def did_you_mean(value: str, choices: Iterable[object]) -> str | None:
    """The choice a mistyped ``value`` was meant to be: the same word in another case, else the closest
    spelling (difflib, as git and kubectl suggest), else None."""
    import difflib

    names = [str(c) for c in choices]
    same = [c for c in names if c.lower() == value.lower()]
    if same:
        return same[0]
    near = difflib.get_close_matches(value, names, n=1, cutoff=0.6) \
        or difflib.get_close_matches(value.lower(), [c.lower() for c in names], n=1, cutoff=0.6)
    if not near:
        return None
    return next((c for c in names if c.lower() == near[0].lower()), near[0])


def no_such(what: str, value: str, choices: Iterable[object], see: str = "") -> UsageError:
    """The one-line error for a value that is not one of ``choices``:
    ``no netns 'cni-4f1x'; did you mean 'cni-4f1e'?`` (exit 2); without a near one, the choices
    (or where to see them)."""
    names = [str(c) for c in choices]
    near = did_you_mean(value, names)
    if near is not None:
        return UsageError(f"no {what} {value!r}; did you mean {near!r}?")
    if see:
        return UsageError(f"no {what} {value!r} (see: {see})")
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return UsageError(f"no {what} {value!r} (one of: {shown})")
