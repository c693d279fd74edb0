"""`ray job submit` against a real local head, with token authentication, writing to a real S3
server on this machine (moto's): the path users take on clusters, where results must outlive the
machines. Every file of a run reaches the bucket; a job that resumes the run on a machine that
never saw it (its local mirror deleted) continues from the bucket's checkpoint and publishes its
adapter there; a relative output_dir is refused in one line. (The report after training is
written and pushed by the same driver code; the demo test reads one.)"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess

import pytest
import yaml

from rlaf_ray.run_log import parse_lines
from tests.conftest import REPO

BUCKET = "rlaf-test"


# Ports `ray start` takes unless told otherwise: the client server's, the workers' range and the
# dashboard agent's. A port the system hands out may be one of them (CI once drew 52365 for the
# head, which Ray then refused as the dashboard agent's).
RAY_DEFAULT_PORTS = {*range(10001, 20000), 52365}


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports, none of Ray's defaults (all held open until all are drawn)."""
    held: list[socket.socket] = []
    try:
        while len(held) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in RAY_DEFAULT_PORTS:
                s.close()
                continue
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


@pytest.fixture
def s3_server():
    """moto's S3 server in a thread, with one bucket; yields a client and the environment that
    points pyarrow (and boto3) at it."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client, env
    finally:
        server.stop()


def keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"][len(prefix):] for page in pages for item in page.get("Contents", [])}


def read_bytes(client, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def read_object(client, key: str) -> str:
    return read_bytes(client, key).decode()


@pytest.mark.slow
def test_submitted_jobs_write_to_s3_resume_from_it_and_refuse_a_relative_output(no_ray, s3_server, tmp_path,
                                                                                 world_models, tiny_cache,
                                                                                 monkeypatch):
    import ray

    assert not ray.is_initialized()  # this test owns the machine's Ray
    client, s3_env = s3_server
    # Token authentication on, as cluster.yaml has it: the head, the jobs CLI and the client share
    # one token (from the environment, so no token file of the machine is read or written).
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    port, dashboard, agent = free_ports(3)
    # The object store's credentials reach the workers from the environment `ray start` ran in,
    # as cluster.yaml gives them the hub token: never through the job's runtime env.
    head = subprocess.run(["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                           f"--dashboard-agent-listen-port={agent}", "--disable-usage-stats"],
                          env={**env, **s3_env}, capture_output=True, text=True, timeout=180)
    assert head.returncode == 0, head.stderr[-3000:]
    address = f"http://127.0.0.1:{dashboard}"
    try:
        # The shipped runtime env, with the hub cache moved off the cluster's shared disk.
        runtime_env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
        runtime_env["env_vars"]["HF_HOME"] = str(tmp_path / "hf")
        runtime_env["env_vars"]["HF_HUB_OFFLINE"] = "1"
        env_file = tmp_path / "runtime_env.yaml"
        env_file.write_text(yaml.safe_dump(runtime_env))
        assert "results/" in runtime_env["excludes"]  # the upload leaves results behind

        def submit(*overrides: str, resume: bool = False) -> str:
            out = subprocess.run(
                ["ray", "job", "submit", "--address", address, "--working-dir", str(REPO),
                 "--runtime-env", str(env_file), "--no-wait", "--",
                 "python", "-m", "rlaf_ray", "train", "--config", "jobs/configs/offline_tiny.yaml",
                 *(["--resume"] if resume else []), "ppo.batch_size=4", "ppo.num_minibatches=1", "ppo.ppo_epochs=1", "generation.max_new_tokens=6",
                 "run.checkpoint_every=1", "resources.learner.num_workers=1", f"run.cache_dir={tiny_cache}",
                 *overrides],
                check=True, env=env, capture_output=True, text=True, timeout=300)
            return re.search(r"raysubmit_\w+", out.stdout + out.stderr).group(0)

        # The jobs CLI with the cluster's token (Ray reads the auth mode once per process, so the
        # CLI, not an in-process client, speaks for the user here).
        def jobs(*args: str, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess:
            return subprocess.run(["ray", "job", *args, "--address", address], env={**env, **extra_env},
                                  capture_output=True, text=True, timeout=timeout)

        def finish(job: str) -> tuple[str, str]:
            """The job's final status and its logs, once it ended: waited for by following its logs
            (one CLI process, not one per poll beside the job on 2 cores); the logs are read again
            after, as the stream may repeat lines it had already sent."""
            jobs("logs", "--follow", job, timeout=600)
            return jobs("status", job).stdout, jobs("logs", job).stdout

        location = f"s3://{BUCKET}/results"
        first = ("run.name=on-s3", f"run.output_dir={location}", "ppo.num_iterations=2", "evaluation.after_train=false")
        job_id = submit(*first)
        # The offline config's relative output_dir would land in Ray's temporary copy of the
        # working directory: refused in one line before anything starts.
        relative_id = submit("run.name=relative", "ppo.num_iterations=2")

        stranger = jobs("list", RAY_AUTH_TOKEN="not-the-token")
        assert stranger.returncode != 0 and "authentication token is invalid" in stranger.stdout + stranger.stderr

        status, logs = finish(relative_id)
        assert re.search(rf"Job '{relative_id}' failed", status)
        refused = [line for line in logs.splitlines() if "run.output_dir" in line]
        assert len(refused) == 1 and "'results' is relative, and under `ray job submit`" in refused[0], refused

        status, logs = finish(job_id)
        assert re.search(rf"Job '{job_id}' succeeded", status), logs[-3000:]
        assert f"[rlaf] done: adapter in {location}/on-s3/final/adapter" in logs
        stored = keys(client, "results/on-s3/")
        for name in ("config.yaml", "run.json", "data_stats.json", "parameters.json", "metrics.jsonl",
                     "prompts.jsonl", "final/adapter/adapter_config.json", "final/adapter/adapter_model.safetensors",
                     "checkpoint_000002/learner.pt"):
            assert name in stored, (name, sorted(stored))
        assert any(k.startswith("tensorboard/") for k in stored)
        assert len(parse_lines(read_object(client, "results/on-s3/metrics.jsonl"))) == 2
        adapter_key = "results/on-s3/final/adapter/adapter_model.safetensors"
        first_adapter = read_bytes(client, adapter_key)

        # Another machine: no local mirror. --resume with more iterations continues from the
        # bucket, and writes there beside what the first job wrote.
        shutil.rmtree(tiny_cache / "mirrors")
        resumed_id = submit(*first[:2], "ppo.num_iterations=3", "evaluation.after_train=false", resume=True)
        status, logs = finish(resumed_id)
        assert re.search(rf"Job '{resumed_id}' succeeded", status), logs[-3000:]
        assert "continuing the train run" in logs
        metrics = parse_lines(read_object(client, "results/on-s3/metrics.jsonl"))
        assert [m["iteration"] for m in metrics] == [1, 2, 3]
        stored = keys(client, "results/on-s3/")
        for name in ("config.1.yaml", "checkpoint_000003/learner.pt", "final/adapter/adapter_model.safetensors"):
            assert name in stored, (name, sorted(stored))  # the first settings kept beside the new ones
        assert read_bytes(client, adapter_key) != first_adapter  # the adapter of iteration 3 replaced it
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
