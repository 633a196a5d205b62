"""Two processes on this machine (`jax.distributed.initialize` on localhost, CPU collectives
over gloo, 2 devices each) train the tiny config for a few steps: both finish with identical
parameters (equal fingerprints of their own replicas) and log the same losses.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from configs import tiny
from input_pipeline import train_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = """
import json, sys
from configs import tiny
from ssvd_jax import jobs
config = tiny.get_config()
config.data.image_size = 64
config.data.root, config.data.tfds_dir, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
config.train.phases = ("phase1",)
config.schedule.phase1.steps = 3
config.eval.after_training = False
config.distributed.coordinator_address = sys.argv[4]
config.distributed.num_processes = 2
config.distributed.process_id = int(sys.argv[5])
summary = jobs.train_and_evaluate(config, workdir).data
import jax
result = dict(summary["phases"]["phase1"], processes=jax.process_count(),
              devices=jax.device_count())
print("RESULT " + json.dumps(result))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_keep_identical_params(tmp_path):
    config = tiny.get_config()
    config.data.image_size = 64
    data = tmp_path / "data"
    config.data.root, config.data.tfds_dir = str(data / "ILSVRC2015"), str(data / "tfds")
    config.data.synthetic.create_root = True  # generated there on first use
    config.train.phases = ("phase1",)
    train_data.prepare(config, str(data))
    address = f"localhost:{_free_port()}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                config.data.root,
                config.data.tfds_dir,
                str(tmp_path / "run"),
                address,
                str(i),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=400)
        finally:
            if p.poll() is None:
                p.kill()
        outputs.append(out)
        assert p.returncode == 0, out[-4000:]
    results = [
        json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        for out in outputs
    ]
    assert [(r["processes"], r["devices"]) for r in results] == [(2, 4), (2, 4)]
    assert results[0]["params_fingerprint"] == results[1]["params_fingerprint"]
    assert results[0]["steps"] == 3
    assert (tmp_path / "run" / "phase1" / "checkpoints" / "3").is_dir()
    # Each process sees the global batch's metrics: the logged losses agree too.
    assert results[0]["final"]["loss"] == results[1]["final"]["loss"]
