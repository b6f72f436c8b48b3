"""Errors that end a command with a one-line message instead of a traceback."""


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
