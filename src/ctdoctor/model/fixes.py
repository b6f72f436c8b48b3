"""A finding's fixes as data: the command's words, what it is for, whether it writes, and where it
can run — made complete for where the finding was made, and rendered to text only at the edge.

A check writes its fixes as command lines (``Finding.fix``, the JSON contract). ``Fix.parse``
reads one into words and its trailing ``# comment``; ``in_scope`` then fits it to the report:
on a host image a ``ctdoctor`` command that reads gets ``--root IMAGE`` (and the finding's
``--netns``), so it examines the same image instead of the machine in front of the user; a
command that acts on a running system (``sysctl -w``, ``modprobe``, ``ctdoctor apply`` ...) is
marked to be run on that host, never printed as if it could run here. ``lines`` breaks a long
command at words with ``\\`` continuations that paste as one command, never inside a word.
Pure: no I/O.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

# ctdoctor subcommands that only read (safe to point at an image with --root)
READING = {"doctor", "status", "top", "plan", "explain", "incidents"}
# ... and those that act on the running system (or write under --root only as an offline edit)
ACTING = {"apply", "notrack", "flush", "recover", "guard", "record", "exporter", "lab", "collect"}
# ctdoctor's global options that take a value (they come before the subcommand)
GLOBAL_VALUED = {"--root", "--netns", "--format", "--host-root", "--interval", "--only", "--skip"}
_COMMENT = re.compile(r"\s{2,}#\s?(.*)$")


@dataclass
class Fix:
    argv: list[str]
    comment: str = ""
    where: str = "here"  # "here": runs as printed; "host": on the host the image was taken from
    writes: bool = False
    scope: dict[str, str | None] = field(default_factory=dict)  # {"root": IMAGE or None, "netns": NAME or None}
    shell: str = ""  # a command with shell syntax (a redirect, a pipe): its text as written

    @classmethod
    def parse(cls, line: str) -> Fix:
        """A check's fix line: the command, then optionally two or more spaces, ``#`` and a comment; a
        line that is only a ``# comment`` is advice with no command."""
        if line.lstrip().startswith("#"):
            return cls([], line.lstrip()[1:].strip())
        cmd, comment = line, ""
        m = _COMMENT.search(line)
        if m and _balanced(line[:m.start()]):
            cmd, comment = line[:m.start()], m.group(1).strip()
        cmd = cmd.strip()
        try:
            argv = shlex.split(cmd)
        except ValueError:  # not shell words: kept whole, shown as written
            return cls([cmd], comment, shell=cmd)
        return cls(argv, comment, shell=cmd if _has_operators(cmd) else "")

    @property
    def tool(self) -> str:
        return self.argv[0] if self.argv else ""

    def subcommand(self) -> str | None:
        """The ctdoctor subcommand of a ctdoctor command (after its global options); None otherwise."""
        if self.tool != "ctdoctor":
            return None
        i = 1
        while i < len(self.argv):
            w = self.argv[i]
            if w in GLOBAL_VALUED:
                i += 2
                continue
            if w.startswith("-"):
                i += 1
                continue
            return w
        return "doctor"

    def text(self) -> str:
        """The command as one line to paste (its words quoted for the shell); "" for advice alone."""
        return self.shell or shlex.join(self.argv)

    def as_dict(self) -> dict[str, object]:
        return {"argv": self.argv, "text": self.text(), "comment": self.comment, "where": self.where,
                "writes": self.writes, "scope": self.scope, "shell": bool(self.shell)}


def _balanced(text: str) -> bool:
    try:
        shlex.split(text)
        return True
    except ValueError:
        return False


def _has_operators(cmd: str) -> bool:
    """Shell syntax outside quotes: a redirect, a pipe, a list, a substitution."""
    lex = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        return any(t and all(c in "();<>|&" for c in t) for t in lex) or "$(" in cmd or "`" in cmd
    except ValueError:
        return True


def words(text: str) -> list[str]:
    """``text`` cut at the spaces between shell words (quoted spans kept whole, as written)."""
    out, cur, quote, i = [], "", "", 0
    while i < len(text):
        c = text[i]
        if quote:
            cur += c
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"' and i + 1 < len(text):
                cur += text[i + 1]
                i += 1
        elif c in "'\"":
            quote, cur = c, cur + c
        elif c == "\\" and i + 1 < len(text):
            cur += c + text[i + 1]
            i += 1
        elif c.isspace():
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    if cur:
        out.append(cur)
    return out


def _writes(f: Fix) -> bool:
    if not f.argv:
        return False
    if f.shell and re.search(r"(^|[^<>&])>>?\s*\S", f.shell):
        return True  # a redirect into a file
    sub = f.subcommand()
    if sub is not None:
        if sub == "notrack":
            return "--apply" in f.argv
        if sub == "flush":
            return "--dry-run" not in f.argv
        return sub in ACTING - {"collect", "exporter", "lab"}
    if f.tool == "sed":
        return "-i" in f.argv or any(a.startswith("-i") for a in f.argv[1:])
    if f.tool == "sysctl":
        return "-w" in f.argv or "-p" in f.argv or "--system" in f.argv
    return f.tool in {"modprobe", "rmmod", "systemctl", "service", "nft", "iptables", "ip6tables", "conntrack",
                      "kill", "pkill"} and not (f.tool in ("nft", "iptables") and any(
                          a in ("list", "-L", "-S", "-nvL") for a in f.argv[1:3]))


def in_scope(line: str, *, image: str | None, netns: str | None, listed: set[str] | None = None) -> Fix:
    """One fix line fitted to where the finding was made: ``image`` is the ``--root`` it was read
    from (None: this live host); ``netns`` the finding's namespace; ``listed`` the namespaces whose
    entry listing the image holds (``top`` on any other one can only run on the host itself)."""
    f = Fix.parse(line)
    f.writes = _writes(f)
    f.scope = {"root": image, "netns": netns}
    sub = f.subcommand()
    if image is None or not f.argv:
        return f
    if sub == "top" and listed is not None:
        argv = f.argv
        target = argv[argv.index("--netns") + 1] if "--netns" in argv[:-1] else (netns or "init")
        if target not in listed:
            f.where = "host"
            return f
    if sub is not None and sub in READING:
        argv = f.argv[1:]
        if "--root" not in argv:
            argv = ["--root", image, *argv]
        if netns and "--netns" not in argv and sub in ("doctor", "top", "status"):
            argv = ["--netns", netns, *argv]
        f.argv = ["ctdoctor", *argv]
        return f
    # everything else acts on (or looks at) a running system: the host the image came from
    f.where = "host"
    return f


def lines(f: Fix, width: int = 80, indent: str = "    $ ") -> list[str]:
    """The command in lines of at most ``width`` where it can: broken between words with ``\\``
    continuations (one command when pasted); a single word longer than that stays whole."""
    return continued(words(f.text()), width, indent, " " * len(indent))


def continued(ws: list[str], width: int, first: str, more: str) -> list[str]:
    """Words of one command in lines of at most ``width`` where it can, broken between words with
    ``\\`` continuations; the first line starts with ``first``, the others with ``more``."""
    out: list[str] = []
    cur = first
    for w in ws:
        fresh = cur in (first, more)
        add = w if fresh else " " + w
        if not fresh and len(cur) + len(add) + 2 > width:
            out.append(cur + " \\")
            cur = more + w
        else:
            cur += add
    out.append(cur)
    return out
