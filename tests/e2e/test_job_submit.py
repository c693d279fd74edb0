"""`ray job submit` against a real local head: the path users take on clusters."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_submitted_train_job_succeeds_and_writes_its_outputs(no_ray, tmp_path, tiny_cache, monkeypatch):
    import ray

    assert not ray.is_initialized()  # this test owns the machine's Ray
    # Token authentication on, as cluster.yaml has it: the head, the jobs CLI and the client share
    # one token (from the environment, so no token file of the machine is read or written).
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    port, dashboard = free_port(), free_port()
    subprocess.run(["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True, timeout=180)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        # The shipped runtime env, with the hub cache moved off the cluster's shared disk.
        runtime_env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
        runtime_env["env_vars"]["HF_HOME"] = str(tmp_path / "hf")
        runtime_env["env_vars"]["HF_HUB_OFFLINE"] = "1"
        env_file = tmp_path / "runtime_env.yaml"
        env_file.write_text(yaml.safe_dump(runtime_env))
        results = tmp_path / "results"

        def submit(*overrides: str) -> str:
            out = subprocess.run(
                ["ray", "job", "submit", "--address", address, "--working-dir", str(REPO),
                 "--runtime-env", str(env_file), "--no-wait", "--",
                 "python", "-m", "rlaf_ray", "train", "--config", "jobs/configs/offline_tiny.yaml",
                 "ppo.num_iterations=2", "ppo.batch_size=8", "ppo.num_minibatches=2", "generation.max_new_tokens=8",
                 "evaluation.after_train=false", f"run.cache_dir={tiny_cache}", *overrides],
                check=True, env=env, capture_output=True, text=True, timeout=300)
            return re.search(r"raysubmit_\w+", out.stdout + out.stderr).group(0)

        job_id = submit("run.name=submitted", f"run.output_dir={results}")
        # The offline config's relative output_dir would land in Ray's temporary copy of the
        # working directory: refused in one line before anything starts.
        relative_id = submit("run.name=relative")

        # The jobs CLI with the cluster's token (Ray reads the auth mode once per process, so the
        # CLI, not an in-process client, speaks for the user here).
        def jobs(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
            return subprocess.run(["ray", "job", *args, "--address", address], env={**env, **extra_env},
                                  capture_output=True, text=True, timeout=120)

        stranger = jobs("list", RAY_AUTH_TOKEN="not-the-token")
        assert stranger.returncode != 0 and "authentication token is invalid" in stranger.stdout + stranger.stderr

        def wait(job: str) -> str:
            deadline = time.monotonic() + 600
            while (status := jobs("status", job).stdout) and not re.search(r"succeeded|failed|stopped", status, re.I):
                assert time.monotonic() < deadline, "job did not finish in 10 minutes"
                time.sleep(1)
            return status

        status = wait(job_id)
        logs = jobs("logs", job_id).stdout
        assert re.search(rf"Job '{job_id}' succeeded", status), logs[-3000:]
        assert "[rlaf] done: adapter in" in logs
        assert re.search(rf"Job '{relative_id}' failed", wait(relative_id))
        refused = [line for line in jobs("logs", relative_id).stdout.splitlines() if "run.output_dir" in line]
        assert len(refused) == 1 and "'results' is relative, and under `ray job submit`" in refused[0], refused

        run_dir = results / "submitted"
        assert (run_dir / "final" / "adapter" / "adapter_config.json").is_file()
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
        # The working directory upload left results and caches behind.
        assert "results/" in runtime_env["excludes"]

        # A job whose output_dir is a URI (file:// resolves through pyarrow as s3:// does): the run
        # lands there, and after the job `rlaf-ray report` works on that location.
        uri_results = tmp_path / "uri-results"
        uri_id = submit("run.name=at-uri", f"run.output_dir=file://{uri_results}")
        assert re.search(rf"Job '{uri_id}' succeeded", wait(uri_id)), jobs("logs", uri_id).stdout[-3000:]
        at_uri = uri_results / "at-uri"
        for name in ("config.yaml", "metrics.jsonl", "prompts.jsonl", "final/adapter/adapter_config.json",
                     "checkpoint_000002/learner.pt"):
            assert (at_uri / name).is_file(), name
        report = subprocess.run(
            [sys.executable, "-m", "rlaf_ray", "report", "--run", f"file://{at_uri}", "evaluation.max_prompts=4",
             "evaluation.samples_per_prompt=1", "evaluation.max_new_tokens=6"],
            cwd=REPO, env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}, capture_output=True, text=True, timeout=600)
        assert report.returncode == 0, report.stderr[-3000:]
        assert (at_uri / "report" / "summary.json").is_file()
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
