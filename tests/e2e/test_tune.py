"""rlaf-ray tune: bad searches fail before Ray starts; one real search (3 trials over lora.r and
ppo.learning_rate, 2 at a time on a 2-CPU Ray, ASHA; interrupted as soon as its first two trials
start, then resumed) is shared by the end-to-end assertions.

Why ASHA's decisions are deterministic here: the metric is ``params/trainable``, which a trial
reports from its first iteration and which grows with lora.r, and lora.r is a grid [16, 8, 4]
that Tune starts in order, two at a time. The r=4 trial starts only when one of the first two has
stopped or finished, so it reaches the first rung (iteration 1) after at least one of them
recorded a larger value there: ASHA stops it at iteration 1. The r=16 trial is never below a
rung's cutoff and runs its 4 iterations (ASHA never stops a trial on its last one). All of this
happens in the resumed run: the interruption comes before any trial reports.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import struct
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlaf_ray.config import ConfigError, from_dict, load_config
from rlaf_ray.tune import tune_search
from rlaf_ray.tune.space import JUDGED_METRICS, REPORTED_METRICS
from tests.conftest import ITERATIONS, RANKS, search_config


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def read_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard event file -> {tag: [(step, value)]} (TFRecord frames of Event protos)."""
    from tensorboardX.proto import event_pb2

    data, pos, out = path.read_bytes(), 0, {}
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


@pytest.fixture(scope="module")
def search(ray_local, policy_path, classifier_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    cfg = from_dict(search_config(policy_path, classifier_path, tmp))
    exp = cfg.run_dir
    started = time.monotonic()

    # Watch the trials from the side: how many trials' named actors are alive at once, and as
    # soon as the first two trials' drivers are up, interrupt the search as Ctrl+C would (Tune
    # ends the run and saves its state on SIGUSR1 as on SIGINT). Both trials are then unfinished
    # and --resume must run them; interrupting before any trial reported keeps the extra cost to a
    # restart, and leaves every ASHA decision to the resumed run (Tune does not save the
    # scheduler's state, see rlaf_ray.tune).
    seen = SimpleNamespace(max_alive=0, names=set(), interrupted_at=None)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            names = set(ray_local.util.list_named_actors())
            rollouts = {n for n in names if n.startswith("rlaf:") and n.endswith(":rollout-0")}
            seen.names |= names
            seen.max_alive = max(seen.max_alive, len(rollouts))
            drivers = [n for n in names if n.startswith("rlaf:") and n.endswith(":driver")]
            if seen.interrupted_at is None and len(drivers) == 2:
                seen.interrupted_at = time.monotonic() - started
                os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        tune_search(cfg)
        interrupted = read_csv(exp / "trials.csv")
        tune_search(cfg, resume=True)
    finally:
        done.set()
        watcher.join()
    seconds = time.monotonic() - started
    print(f"[test] search with one interruption took {seconds:.0f}s (interrupted after "
          f"{seen.interrupted_at}s)")
    return SimpleNamespace(cfg=cfg, exp=exp, rows=read_csv(exp / "trials.csv"), interrupted=interrupted,
                           seen=seen, tmp=tmp)


def by_rank(rows: list[dict]) -> dict[int, dict]:
    return {int(row["lora.r"]): row for row in rows}


@pytest.mark.slow
def test_search_completes_and_asha_stops_early(search):
    rows = by_rank(search.rows)
    assert sorted(rows) == sorted(RANKS)
    best = rows[16]
    assert best["status"] == "completed" and best["iterations"] == f"{ITERATIONS}/{ITERATIONS}"
    assert best["adapter"] == str(search.exp / best["trial"] / "final" / "adapter")
    assert json.loads((Path(best["adapter"]) / "adapter_config.json").read_text())["r"] == 16
    # The smallest rank reached rung 1 behind a larger one: stopped there, its adapter from a checkpoint.
    last = rows[4]
    assert last["status"] == "stopped early at iteration 1 (ASHA)" and last["iterations"] == f"1/{ITERATIONS}"
    assert "/checkpoint_" in last["adapter"] and Path(last["adapter"]).is_dir()
    assert rows[8]["status"] in ("completed", "stopped early at iteration 1 (ASHA)",
                                 "stopped early at iteration 2 (ASHA)")


@pytest.mark.slow
def test_summary_ranks_trials_by_the_metric_with_kl_beside(search):
    rows = search.rows
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]
    assert [int(r["lora.r"]) for r in rows] == RANKS  # params/trainable grows with r
    values = [float(r["params/trainable"]) for r in rows]
    assert values == sorted(values, reverse=True) and values[0] > values[-1]
    for row in rows:
        assert float(row["kl/mean"]) == float(row["kl/mean"])  # a number, reported beside
        assert 0.0 <= float(row["reward/mean"]) <= 1.0  # the share of replies that are questions
        # the default objective, reported beside: reward less the KL price (tune.kl_price 0.1)
        assert float(row["objective"]) == pytest.approx(float(row["reward/mean"]) - 0.1 * float(row["kl/mean"]))
        assert 1e-4 <= float(row["ppo.learning_rate"]) <= 1e-2
    md = (search.exp / "trials.md").read_text()
    assert md.index(f"| 1 | {rows[0]['trial']} |") < md.index(f"| 3 | {rows[2]['trial']} |")
    assert "| lora.r | ppo.learning_rate | params/trainable | objective | reward/mean | kl/mean |" in md


@pytest.mark.slow
def test_resume_continues_the_unfinished_trials(search):
    assert search.seen.interrupted_at is not None
    before, after = search.interrupted, search.rows
    # Interrupted with the first two trials started and none finished ...
    assert len(before) >= 2 and all(r["status"] == "not started" for r in before), before
    # ... --resume ran those same trials (Tune restored them, no new search) and the rest.
    assert {r["trial"] for r in before} <= {r["trial"] for r in after}
    assert len(after) == len(RANKS)
    assert not [r for r in after if r["status"].startswith(("unfinished", "not started", "error"))]


@pytest.mark.slow
def test_trials_ran_two_at_a_time_with_named_actors(search):
    # Two trials' actors alive at once on 2 CPUs: concurrent trials did not wait on each other.
    assert search.seen.max_alive == 2
    # Every trial's actors under their own name (the dashboard shows them by it).
    for row in search.rows:
        assert {f"rlaf:{row['trial']}:{role}" for role in ("driver", "rollout-0", "reward-0")} <= search.seen.names


@pytest.mark.slow
def test_tensorboard_events_per_trial(search):
    for row in search.rows:
        events = list((search.exp / row["trial"]).glob("events.out.tfevents.*"))
        assert events, row["trial"]
        scalars: dict = {}
        for path in events:
            for tag, points in read_scalars(path).items():
                scalars.setdefault(tag, []).extend(points)
        reward = scalars["ray/tune/reward/mean"]
        assert len(reward) >= int(row["iterations"].split("/")[0])
        assert "ray/tune/kl/mean" in scalars
        # the run's own curves too, written every iteration (live)
        assert list((search.exp / row["trial"] / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_reported_metrics_are_the_ones_the_search_knows(search):
    best = search.rows[0]
    lines = (search.exp / best["trial"] / "metrics.jsonl").read_text().splitlines()
    assert set(json.loads(lines[-1])) == REPORTED_METRICS - JUDGED_METRICS  # not the offline world


@pytest.mark.slow
def test_existing_search_needs_resume_and_the_same_config(search, policy_path, classifier_path):
    with pytest.raises(ConfigError, match="a search already exists .* add --resume"):
        tune_search(search.cfg)
    changed = search_config(policy_path, classifier_path, search.tmp)
    changed["ppo"]["kl_coef"] = 0.5
    with pytest.raises(ConfigError, match=r"--resume: the configuration differs .*ppo.kl_coef: 0.5 now"):
        tune_search(from_dict(changed), resume=True)
    other = search_config(policy_path, classifier_path, search.tmp)
    other["run"]["name"] = "never-ran"
    with pytest.raises(ConfigError, match="--resume: no search to resume"):
        tune_search(from_dict(other), resume=True)


def test_best_config_is_a_train_config_of_the_best_trial(search, tmp_path):
    """What `rlaf-ray train --config best_config.yaml` runs: the best trial's settings as a train
    config (a train run of such a config is what every other end-to-end test runs)."""
    from rlaf_ray.preflight import prepare

    best = search.rows[0]
    path = search.exp / "best_config.yaml"
    cfg = load_config(path, ["ppo.num_iterations=1", f"run.output_dir={tmp_path}"])
    assert cfg.lora.r == 16 and cfg.run.name == "search-best"
    assert cfg.ppo.learning_rate == pytest.approx(float(best["ppo.learning_rate"]))
    assert not cfg.tune.search_space  # a train config, not a search
    assert prepare(cfg, ("train",)).run_dir == tmp_path / "search-best"  # every check a run makes first


@pytest.mark.slow
def test_summary_reads_a_search_at_a_uri(search, tmp_path):
    """The same search seen through a URI (pyarrow resolves file:// as it does s3://): the trials,
    their adapters' locations at the URI, and the summary written back there."""
    from rlaf_ray.config import resolve_paths
    from rlaf_ray.tune.space import validate_search
    from rlaf_ray.tune.summary import summarize

    location = f"file://{search.cfg.run.output_dir}"
    at_uri = resolve_paths(search.cfg.replace(run={"output_dir": location, "cache_dir": str(tmp_path)}))
    assert at_uri.run_dir.is_relative_to(tmp_path)  # read through a mirror, not in place
    rows = {row.trial_id: row for row in summarize(at_uri.run_storage, at_uri, validate_search(at_uri)[0])}
    local = {row["trial"]: row for row in search.rows}
    assert set(rows) == set(local)
    for trial_id, row in rows.items():
        assert row.status == local[trial_id]["status"]
        assert row.adapter == local[trial_id]["adapter"].replace(search.cfg.run.output_dir, location, 1)
    assert "file://" in (search.exp / "trials.md").read_text()  # pushed to the search's location
