"""The same pieces on a Ray cluster: a local instance started here, reached by its address."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bitqnn.cli import EXIT_FALSIFIED, EXIT_INPUT

pytest.importorskip("ray")

SPECS = Path(__file__).resolve().parents[1] / "specs"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """`ray start --head` as a user would run it on a head node, with a token of its own
    (Ray's token authentication, which a client must present); stopped afterwards.
    Yields the address and the environment a client needs."""
    ray_cli = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    started = subprocess.run([ray_cli, "start", "--head", "--num-cpus=2", f"--port={port}",
                              "--include-dashboard=false", "--disable-usage-stats"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert started.returncode == 0, started.stderr
    yield f"127.0.0.1:{port}", env
    subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120, env=env)


def prove(spec: str, flags: list[str], env: dict) -> tuple[int, list, str]:
    """`bitqnn prove --json` as its own process, as a user runs it."""
    run = subprocess.run([sys.executable, "-m", "bitqnn.cli", "prove", str(SPECS / spec), "--json", *flags],
                         capture_output=True, text=True, timeout=300, env=env)
    results = json.loads(run.stdout)["results"] if run.stdout.strip() else []
    return run.returncode, [(r["label"], r["verdict"], r["witness"]) for r in results], run.stderr


@pytest.mark.slow
def test_ray_cluster_gives_the_results_of_local_processes(cluster):
    address, env = cluster
    for spec, expected in (("digits_falsify.qspec", EXIT_FALSIFIED), ("digits_robust.qspec", 0)):
        local = prove(spec, ["--jobs", "2"], env)
        remote = prove(spec, ["--executor", "ray", "--address", address], env)
        assert remote[0] == local[0] == expected, remote[2][-500:]
        assert remote[1] == local[1]  # verdicts, and the very witnesses: the tasks are the same
        assert "ray worker(s)" in remote[2]


@pytest.mark.slow
def test_an_unreachable_cluster_is_an_input_error(cluster):
    _, env = cluster
    code, _, err = prove("digits_robust.qspec", ["--executor", "ray", "--address", f"127.0.0.1:{_free_port()}"],
                         env)
    assert code == EXIT_INPUT
    assert "cannot connect to Ray" in err and "Traceback" not in err
