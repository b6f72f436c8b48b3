"""Command line. Kept import-light: ``ctdoctor --help`` must stay fast.

Global options are accepted before or after the command name
(``ctdoctor --netns all status`` = ``ctdoctor status --netns all``).
"""

from __future__ import annotations

import errno
import importlib
import itertools
import os
import sys
from typing import TYPE_CHECKING

from ctdoctor import cleanup
from ctdoctor.commands.common import NOTHING, enforce
from ctdoctor.commands.parser import COMMANDS, build_parser, choose_command
from ctdoctor.errors import CtdError

if TYPE_CHECKING:
    pass

def entry() -> None:
    """The console script (and ``python -m ctdoctor``): ``main()``, then the exit."""
    code = main()
    cleanup.exit_now_if_allowed(code)
    raise SystemExit(code)


def _wants_nagios(argv: list[str]) -> bool:
    """``--format nagios`` anywhere: then every error is one ``UNKNOWN - reason`` line and exit 3."""
    return "--format=nagios" in argv or any(a == "--format" and b == "nagios" for a, b in itertools.pairwise(argv))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not _wants_nagios(argv):
        return _main(argv)
    import contextlib  # the Nagios path's own imports: kept off every other start
    import io

    from ctdoctor.render.nagios import unknown_line

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = _main(argv)
    text = err.getvalue()
    if code in (0, 1, 2) and not text.strip().startswith(("ctdoctor: error", "ctdoctor: internal error")):
        sys.stderr.write(text)
        return code
    if code == 3 and not text.strip():
        return code  # the doctor already printed its UNKNOWN line
    reason = next((ln for ln in text.splitlines() if ln.startswith("ctdoctor:")), text.strip() or f"exit {code}")
    print(unknown_line(reason.removeprefix("ctdoctor: ").removeprefix("error: ")))
    sys.stderr.write(text)
    return 3


def _main(argv: list[str]) -> int:
    # Only the command actually used gets a parser with its own flags (its module imported
    # lazily); the full set is built for --help, a bad command and the like.
    try:
        chosen, argv = choose_command(argv, COMMANDS)
    except CtdError as e:
        print(f"ctdoctor: error: {e}", file=sys.stderr)
        return e.exit_code
    commands = COMMANDS
    parser = build_parser(commands)
    if chosen is not None:
        mod = importlib.import_module(commands[chosen][0])
        sp = parser._subparsers._group_actions[0].choices[chosen]  # type: ignore[union-attr,index]
        mod.add_arguments(sp)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its one line
        return 2 if e.code not in (0, None) else 0
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    color = getattr(args, "color", None)
    if color == "never":  # rich reads these when a console is made
        os.environ["NO_COLOR"] = "1"
        os.environ.pop("FORCE_COLOR", None)
    elif color == "always":
        os.environ["FORCE_COLOR"] = "1"
        os.environ.pop("NO_COLOR", None)
    mod = importlib.import_module(args._module)
    cleanup.install_signal_handlers()
    code = None
    try:
        enforce(mod.requires(args) if hasattr(mod, "requires") else NOTHING, args)
        code = int(mod.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, not at exit, so the code is kept
        return code
    except CtdError as e:
        print(f"ctdoctor: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except PermissionError as e:
        print(f"ctdoctor: error: permission denied: {e.filename or e} (run as root?)", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `ctdoctor | head -1`: the reader left. Keep the command's own status (the doctor's
        # Nagios code) and stop Python from complaining about stdout at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return code if code is not None else int(getattr(args, "_exit_code", 0))
    except Exception as e:
        if os.environ.get("CTDOCTOR_DEBUG"):
            raise
        if isinstance(e, OSError) and e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN):
            # the host (or this process's limits) ran out of fds, memory or threads: no bug of ours
            print(f"ctdoctor: error: out of resources: {e.strerror} (ulimit -n, or the host is starved)",
                  file=sys.stderr)
            return 1
        print(f"ctdoctor: internal error: {type(e).__name__}: {e} (set CTDOCTOR_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1
