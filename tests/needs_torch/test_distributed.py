"""`torchrun --nproc_per_node=2 -m training mnist` trains with DistributedDataParallel (gloo, CPU)."""

import os
import subprocess
import sys
from pathlib import Path

import artifacts
from testkit.payloads import mnist_root


REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes_train_a_few_steps(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "training", "mnist", "--data-root", str(mnist_root()), "--no-download",
           "--limit-train", "4096", "--max-steps", "20", "--epochs", "1", "--hidden", "64",
           "--batch-size", "128", "--out", str(tmp_path)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    # both ranks trained (one epoch line each); rank 0 alone evaluated on the test set and exported, with the report
    assert log.count("member 0 epoch   1") == 2
    assert log.count("test accuracy") == 1
    accuracy = float(log.split("test accuracy")[1].split()[0])
    assert accuracy > 0.5  # 20 steps of a tiny net: far above chance (0.1)
    assert "'world_size': 2" in log
    assert log.count("exported mnist-fc version") == 1
    (version,) = artifacts.folder_versions("mnist-fc", tmp_path)
    assert (tmp_path / "mnist-fc" / version / "report" / "curves.png").stat().st_size > 0
