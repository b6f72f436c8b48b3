"""ctdoctor exporter: every netns's conntrack table as Prometheus metrics (docs/design.md, "The exporter").

Serves ``/metrics`` on 127.0.0.1:9718 by default, or writes ``DIR/ctdoctor.prom`` for
node_exporter's textfile collector (``--textfile DIR``, ``--once`` for a timer).
"""

from __future__ import annotations

import argparse
import getpass
import sys

from ctdoctor.commands.common import Needs, bounded
from ctdoctor.errors import UsageError
from ctdoctor.monitor import server, webconfig

REFRESH = bounded(float, 1, 86400)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--web.listen-address", "--listen", dest="listen", metavar="ADDR:PORT", action="append",
                   default=None, help="where to serve (default 127.0.0.1:9718; ':9718' for every address, IPv6 "
                                      "and IPv4; '[::1]:9718'); repeat it for several addresses")
    p.add_argument("--web.config.file", dest="web_config", metavar="FILE", default=None,
                   help="TLS, client certificates, basic auth (bcrypt), headers and rate limit, in the Prometheus "
                        "exporter-toolkit format; re-read when it changes")
    p.add_argument("--compat", choices=("node",), default=None,
                   help="node: also serve node_exporter's node_nf_conntrack_* metrics (same names and types) with a "
                        "netns label, and node_uname_info, so node-mixin and awesome-prometheus-alerts rules and the "
                        "node-exporter-full dashboard see every netns")
    p.add_argument("--hash-password", action="store_true",
                   help="read a password from stdin and print its bcrypt hash for basic_auth_users, then exit")
    p.add_argument("--web.telemetry-path", dest="telemetry_path", metavar="PATH", default="/metrics",
                   help="where the metrics are served (default /metrics)")
    p.add_argument("--web.max-requests", dest="max_requests", type=bounded(int, 1, 100000), default=256,
                   metavar="N", help="requests waiting or being answered at once; more get 503 (default 256)")
    p.add_argument("--refresh", type=REFRESH, default=30.0, metavar="S",
                   help="seconds between background refreshes of the listing and the doctor (default 30)")
    p.add_argument("--discover", type=bounded(float, 0.5, 3600), default=5.0, metavar="S",
                   help="seconds between looks for namespaces that appeared or went away (default 5)")
    p.add_argument("--textfile", metavar="DIR",
                   help="write DIR/ctdoctor.prom (atomically) for node_exporter's textfile collector instead of serving")
    p.add_argument("--once", action="store_true", help="with --textfile: write once and exit (for a timer)")
    p.add_argument("--detail", choices=("busy", "all"), default="busy",
                   help="busy (default): a quiet netns gets entries, limit, drop/early_drop/insert_failed and its "
                        "info; the per-state breakdown and the other stats for init and for a netns at half its "
                        "limit or that has dropped. all: every series of every netns")


def requires(args: argparse.Namespace) -> Needs:
    return Needs(live=True, what="the exporter")  # unprivileged it serves what it can see, and says so

def hash_password() -> int:
    """--hash-password: one line from stdin (no echo on a terminal) -> its bcrypt hash (cost 10)."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    print(webconfig.hash_password(password))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.hash_password:
        return hash_password()
    fmt = getattr(args, "format", None)
    if fmt not in (None, "text"):
        raise UsageError("--format does not apply to the exporter (it speaks the Prometheus format)")
    if args.once and not args.textfile:
        raise UsageError("--once goes with --textfile DIR")
    if args.textfile and (args.listen or args.web_config):
        raise UsageError("--textfile writes a file instead of serving: leave out --web.listen-address and "
                         "--web.config.file")
    if args.textfile and args.compat:
        raise UsageError("--compat node cannot go into node_exporter's textfile collector: node_exporter serves "
                         "those names itself (with other labels, which breaks its scrape); serve over HTTP instead")
    if not args.telemetry_path.startswith("/") or args.telemetry_path == "/" or "?" in args.telemetry_path:
        raise UsageError(f"--web.telemetry-path {args.telemetry_path}: a path such as /metrics")
    server.run(netns=getattr(args, "netns", None), refresh=args.refresh, discover=args.discover,
               host_root=getattr(args, "host_root", None), detail=args.detail, compat=args.compat or "",
               listen=args.listen, web_config=args.web_config, telemetry_path=args.telemetry_path,
               max_requests=args.max_requests, textfile_dir=args.textfile, once=args.once)
    return 0
