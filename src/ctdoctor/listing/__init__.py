"""The conntrack listing line: its grammar, the C and pure-Python scanners, aggregation.

Pure: bytes in, tallies out; the files and sockets are opened by ``ctdoctor.sources``."""
