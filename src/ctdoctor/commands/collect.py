"""ctdoctor collect -o FILE.tar.gz."""

from __future__ import annotations

import argparse

from ctdoctor.bundle.collect import Step, collect
from ctdoctor.commands.common import Needs, check_format
from ctdoctor.errors import UsageError
from ctdoctor.render.fmt import num, size
from ctdoctor.render.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, metavar="FILE.tar.gz", help="where to write the bundle")
    p.add_argument("--no-entries", action="store_true", help="do not include the entry listings")
    p.add_argument("--anonymize", action="store_true",
                   help="replace addresses consistently (same input address -> same output address) and "
                        "every copy of the host name")
    p.add_argument("--anonymize-netns", action="store_true",
                   help="with --anonymize: also rename network namespaces (netns-1, netns-2, ...)")


def requires(args: argparse.Namespace) -> Needs:
    return Needs(live=True, root=True, what="collect", why="to enter every netns and read its table")

def run(args: argparse.Namespace) -> int:
    check_format(args, ("text",))  # --format is refused where it does not apply, never ignored
    if args.anonymize_netns and not args.anonymize:
        raise UsageError("--anonymize-netns goes with --anonymize")
    if getattr(args, "netns", None) not in (None, "all"):
        raise UsageError("collect always captures every network namespace; drop --netns")
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    with Progress(getattr(args, "format", "text")) as progress:  # on a terminal, once it takes over a second
        meta = collect(args.output, entries=not args.no_entries, anonymize=args.anonymize,
                       host_root=getattr(args, "host_root", None),
                       anonymize_netns=args.anonymize_netns, progress=lambda st: progress.step(said(st)))
    names = ", ".join(n["name"] for n in meta["namespaces"])
    err.print(f"wrote {args.output}: {len(meta['namespaces'])} network namespace(s) ({names})"
              + ("; addresses anonymized" if args.anonymize else "")
              + ("; without entries" if args.no_entries else ""))
    err.print(f"read it with: ctdoctor --root {args.output} status")
    return 0


def said(st: Step) -> str:
    """``collecting (4/9): the entries of netns init: 12.5 MiB, 48,213 entries``."""
    text = f"collecting ({min(st.done + 1, st.total)}/{st.total}): {st.what}"
    if st.bytes_total:
        return f"{text}: {size(st.bytes)} of {size(st.bytes_total)}"
    if st.bytes or st.entries:
        return f"{text}: {size(st.bytes)}, {num(st.entries)} entries"
    return text
