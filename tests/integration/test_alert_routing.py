"""The shipped inhibit rules in a real Alertmanager (Debian prometheus-alertmanager), on 127.0.0.1
with a temporary config and storage: a full netns pages once, its symptoms wait behind the page,
and other namespaces and hosts still page on their own."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

CONTRIB = Path(__file__).parent.parent.parent / "contrib"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alertmanager() -> str:
    path = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("alertmanager is missing: `make test` installs prometheus-alertmanager with apt")
        pytest.skip("prometheus-alertmanager not installed")
    return path


def alert(name: str, instance: str, netns: str, severity: str, **extra) -> dict:
    return {"labels": {"alertname": name, "instance": instance, "job": "ctdoctor", "netns": netns,
                       "severity": severity, **extra}, "annotations": {"summary": name}}


def test_one_page_per_netns_incident():
    rules = yaml.safe_load((CONTRIB / "alertmanager" / "ctdoctor-inhibit.yml").read_text())["inhibit_rules"]
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v2"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "alertmanager.yml"
        cfg.write_text(yaml.safe_dump({"route": {"receiver": "null", "group_wait": "1h"},
                                       "receivers": [{"name": "null"}], "inhibit_rules": rules}))
        check = subprocess.run([shutil.which("amtool") or "amtool", "check-config", str(cfg)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        am = subprocess.Popen([alertmanager(), f"--config.file={cfg}", f"--storage.path={tmp}/data",
                               f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            end = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{api}/status", timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > end or am.poll() is not None:
                        raise AssertionError("alertmanager did not start: "
                                             + am.stderr.read().decode()[-500:]) from None
                    time.sleep(0.2)
            sent = [
                # n1/pod-a: full and dropping, with what follows from it
                alert("CtdoctorConntrackDropping", "n1:9718", "pod-a", "critical", incident="table-full"),
                alert("CtdoctorConntrackTableFull", "n1:9718", "pod-a", "critical", incident="table-full"),
                alert("CtdoctorConntrackEarlyDropStorm", "n1:9718", "pod-a", "warning"),
                alert("CtdoctorCriticalFinding", "n1:9718", "pod-a", "critical", code="CT005"),
                # n1/pod-b: only nearly full: its own warning
                alert("CtdoctorConntrackTableNearlyFull", "n1:9718", "pod-b", "warning"),
                # n2/pod-a: full, not dropping yet (the same netns name on another host is another incident)
                alert("CtdoctorConntrackTableFull", "n2:9718", "pod-a", "critical", incident="table-full"),
                alert("CtdoctorConntrackEarlyDropStorm", "n2:9718", "pod-a", "warning"),
                # n3: the exporter is down, so its refresh is stale
                alert("CtdoctorExporterDown", "n3:9718", "all", "warning"),
                alert("CtdoctorExporterStale", "n3:9718", "all", "warning"),
            ]
            req = urllib.request.Request(f"{api}/alerts", data=json.dumps(sent).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
            got = json.loads(urllib.request.urlopen(f"{api}/alerts?inhibited=false&silenced=false", timeout=5)
                             .read())
            paging = sorted((a["labels"]["instance"], a["labels"]["netns"], a["labels"]["alertname"]) for a in got)
            assert paging == [("n1:9718", "pod-a", "CtdoctorConntrackDropping"),
                              ("n1:9718", "pod-b", "CtdoctorConntrackTableNearlyFull"),
                              ("n2:9718", "pod-a", "CtdoctorConntrackTableFull"),
                              ("n3:9718", "all", "CtdoctorExporterDown")], paging
            everything = json.loads(urllib.request.urlopen(f"{api}/alerts", timeout=5).read())
            assert len(everything) == len(sent)  # the others are there, inhibited, not lost
        finally:
            am.terminate()
            try:
                am.wait(10)
            except subprocess.TimeoutExpired:
                am.kill()
                am.wait()
