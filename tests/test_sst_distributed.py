"""sst-lm under ``torch.distributed.run --nproc_per_node=2`` (gloo, CPU): identical final parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from sparseforge.recipes import run_recipe
    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    _, s = run_recipe("sst-lm", preset="smoke", out=os.path.join(out, "run"), report=False,
                      overrides=["methods=sst,relora,galore", "steps=12", "measure_memory=false",
                                 "eval_every=6", "sst_T3=3", "relora_reset_every=5", "galore_proj_gap=4"])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(s, f)
    """
)


def test_two_process_run_identical_parameters(tmp_path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s0 = json.loads((tmp_path / "rank0.json").read_text())
    s1 = json.loads((tmp_path / "rank1.json").read_text())
    assert s0["world_size"] == 2 and s1["world_size"] == 2
    for m in ("sst", "relora", "galore"):
        assert s0[f"param_checksum/{m}"] == s1[f"param_checksum/{m}"], m
        assert s0[f"val_ppl/{m}"] == s1[f"val_ppl/{m}"]
    assert (tmp_path / "run" / "summary.json").exists()  # only rank 0 writes
