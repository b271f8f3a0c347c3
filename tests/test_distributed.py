"""Two CPU processes under torchrun (gloo): the magnitude recipe ends with identical replicas."""

import json
import os
import socket
import subprocess
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_magnitude_smoke(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "sparseforge.cli", "run", "magnitude", "--preset", "smoke",
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["ddp_world_size"] == 2
    sums = s["ddp_replica_checksums"].split(",")
    assert len(sums) == 2 and sums[0] == sums[1]
    assert s["ddp_replicas_identical"] is True
