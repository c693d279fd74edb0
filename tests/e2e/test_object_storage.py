"""A run whose output_dir is an S3 URI, against a real S3 server on this machine (moto's): every
file of the run reaches the bucket, nothing lands in the working directory, and a resume on a
machine that never saw the run (its local mirror deleted) continues from the bucket's checkpoint."""

from __future__ import annotations

import shutil

import pytest

from rlaf_ray.config import from_dict
from rlaf_ray.train import train
from tests.conftest import WORLD_DATA, base_config

BUCKET = "rlaf-test"


@pytest.fixture
def s3_server(no_ray, monkeypatch):
    """moto's S3 server in a thread; its address reaches pyarrow (the driver's and, through the
    environment Ray starts them with, every worker's) by AWS_ENDPOINT_URL."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    import ray

    ray.init(num_cpus=2, include_dashboard=False)  # after the environment is set: workers inherit it
    try:
        yield client
    finally:
        ray.shutdown()
        server.stop()


def keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"][len(prefix):] for page in pages for item in page.get("Contents", [])}


@pytest.mark.slow
def test_a_run_on_s3_writes_everything_there_and_resumes_from_it(s3_server, policy_path, classifier_path,
                                                                  judge_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative path written by mistake would show up here
    config = base_config(policy_path, classifier_path, tmp_path, data=WORLD_DATA,
                         ppo={"num_iterations": 2, "batch_size": 4, "num_minibatches": 1, "ppo_epochs": 1},
                         resources={"learner": {"num_workers": 1, "num_cpus": 0.5}},
                         evaluation={"after_train": True, "max_prompts": 4, "samples_per_prompt": 1,
                                     "max_new_tokens": 6, "perplexity_model": judge_path},
                         run={"name": "on-s3", "output_dir": f"s3://{BUCKET}/results", "checkpoint_every": 1})
    first = train(from_dict(config))
    stored = keys(s3_server, "results/on-s3/")
    for name in ("config.yaml", "run.json", "data_stats.json", "parameters.json", "metrics.jsonl",
                 "final/adapter/adapter_config.json", "final/adapter/adapter_model.safetensors",
                 "report/summary.json", "report/base/metrics.json", "report/trained/metrics.json",
                 "checkpoint_000002/learner.pt"):
        assert name in stored, (name, sorted(stored))
    assert any(k.startswith("tensorboard/") for k in stored)
    lines = s3_server.get_object(Bucket=BUCKET, Key="results/on-s3/metrics.jsonl")["Body"].read().splitlines()
    assert len(lines) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # the models' cache only

    # Another machine: no local mirror. --resume with more iterations continues from the bucket.
    shutil.rmtree(first)
    config["ppo"]["num_iterations"] = 3
    config["evaluation"]["after_train"] = False
    second = train(from_dict(config), resume=True)
    iterations = [line for line in s3_server.get_object(
        Bucket=BUCKET, Key="results/on-s3/metrics.jsonl")["Body"].read().decode().splitlines()]
    assert [int(line.split('"iteration": ')[1].split(",")[0]) for line in iterations] == [1, 2, 3]
    assert "config.1.yaml" in keys(s3_server, "results/on-s3/")  # the first settings kept beside
    assert (second / "final" / "adapter" / "adapter_config.json").is_file()
