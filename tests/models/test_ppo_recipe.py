"""The PPO recipe's mechanics on a tiny random LM (no Ray): a critic that cannot rewrite the
policy, no weight decay on the adapter, the missing-EOS penalty's sign, running reward
normalization (and its checkpoint), the KL term in the loss, and the approximate-KL early stop
(also across two DDP ranks, which must stop together)."""

from __future__ import annotations

import math
import multiprocessing

import pytest
import torch

from rlaf_ray.config import GenerationSettings, PPOSettings
from rlaf_ray.models.policy import PolicyWithValueHead
from rlaf_ray.ppo import core
from rlaf_ray.ppo.batch import collate
from rlaf_ray.ppo.update import PPOLearner
from tests.models.random_lm import EOS, MAX_NEW, PAD, sample, tiny_policy

GENERATION = GenerationSettings(max_new_tokens=MAX_NEW, temperature=0.9, top_k=20)


def learner_and_batch(critic: str = "detached", seed: int = 0, perturbed: bool = False, **ppo):
    """A learner on a tiny random policy, and a batch of six samples from that policy;
    ``perturbed``: the adapter has weights (policy != reference) before sampling."""
    policy = tiny_policy(seq2seq=False)
    if perturbed:
        perturb_adapter(policy)
    prompts, responses, _ = sample(policy, GENERATION, seq2seq=False, seed=seed)
    torch.manual_seed(0)
    model = PolicyWithValueHead(policy, critic=critic if ppo.get("estimator", "gae") == "gae" else "none")
    settings = PPOSettings(**{"batch_size": 6, "num_minibatches": 2, "learning_rate": 1e-2, **ppo})
    return PPOLearner(settings, model, GENERATION, EOS), collate(prompts, responses, PAD), responses


def perturb_adapter(policy, std: float = 0.3) -> None:
    """LoRA's B starts at 0 (policy == reference): give it weights, so that the KL is not 0."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=std)


def sequence_kl(learner: PPOLearner, batch) -> float:
    with torch.no_grad():
        logprobs, _, _ = learner.forward(learner.model, batch)
        ref = learner._reference_logprobs(batch)
    return float(((logprobs - ref) * batch.response_mask).sum() / batch.response_ids.shape[0])


@pytest.mark.parametrize("critic", ["detached", "shared"])
def test_value_loss_reaches_the_adapter_only_with_a_shared_critic(critic):
    learner, batch, _ = learner_and_batch(critic)
    model = learner.model
    _, values = model(**batch.inputs)
    values.pow(2).mean().backward()  # a value loss alone
    lora = [p.grad for n, p in model.policy.named_parameters() if "lora_" in n]
    lora_moved = any(g is not None and g.abs().sum() > 0 for g in lora)
    assert model.value_head.weight.grad.abs().sum() > 0
    assert lora_moved == (critic == "shared")


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_critic_free_estimator_has_no_value_head_and_steps_up_its_objective(estimator):
    # Three groups of two responses; in each group the first scores higher.
    learner, batch, responses = learner_and_batch(estimator=estimator, samples_per_prompt=2, ppo_epochs=1,
                                                  num_minibatches=1, learning_rate=1e-4)
    assert learner.model.value_head is None and learner.value_params == []
    scores, finite = torch.tensor([1.0, 0.0, 3.0, 2.0, 0.5, -0.5]), torch.ones(6, dtype=torch.bool)
    targets = learner.targets(batch, scores, finite)
    assert targets.old_values is None and targets.returns is None
    per_response = (targets.advantages * targets.mask).sum(1) / targets.mask.sum(1)
    assert (per_response[0::2] > 0).all() and (per_response[1::2] < 0).all()

    def objective() -> float:  # what the policy-gradient step ascends, at the old advantages
        with torch.no_grad():
            logprobs, values, _ = learner.forward(learner.model, batch)
        assert values is None
        return float((targets.advantages * logprobs * targets.mask).sum())

    before = objective()
    metrics = learner.step(batch, scores, torch.tensor([EOS in r for r in responses]))
    # One small Adam step along the gradient: the advantage-weighted log-likelihood must rise.
    assert objective() > before
    assert metrics["ppo/value_loss"] == 0.0 and metrics["ppo/value_grad_norm"] == 0.0


def test_adapter_is_not_weight_decayed_by_default():
    learner, _, _ = learner_and_batch()
    # torch's AdamW would decay by 0.01 unless told otherwise.
    assert [g["weight_decay"] for g in learner.optimizer.param_groups] == [0.0]
    decayed, _, _ = learner_and_batch(weight_decay=0.05)
    assert decayed.optimizer.param_groups[0]["weight_decay"] == 0.05


def test_missing_eos_penalty_is_subtracted():
    learner, _, _ = learner_and_batch(missing_eos_penalty=2.0)
    shaped = learner.shaped_scores(torch.tensor([1.0, 1.0]), torch.tensor([True, False]))
    assert shaped.tolist() == [1.0, -1.0]


def test_scores_are_normalized_by_running_statistics_and_checkpointed():
    learner, batch, responses = learner_and_batch(ppo_epochs=1)
    ended = torch.tensor([EOS in r for r in responses])
    raw = torch.tensor([10.0, 12.0, 14.0, 16.0, 18.0, 20.0])
    metrics = learner.step(batch, raw, ended)
    # The first batch is normalized by its own statistics: mean 15, std sqrt(14).
    assert metrics["reward/mean"] == pytest.approx(15.0)
    assert metrics["reward/normalized_mean"] == pytest.approx(0.0, abs=1e-6)
    assert (metrics["reward/running_mean"], metrics["reward/running_std"]) == pytest.approx((15.0, math.sqrt(14.0)))
    state = learner.state_dict()
    resumed, _, _ = learner_and_batch(ppo_epochs=1)
    resumed.load_state_dict(state)
    assert resumed.reward_stats.state_dict() == learner.reward_stats.state_dict()
    # A checkpoint from before reward normalization still loads, with fresh statistics.
    old, _, _ = learner_and_batch(ppo_epochs=1)
    old.load_state_dict({k: v for k, v in state.items() if k != "reward_stats"})
    assert old.reward_stats.count == 0
    # The second batch is normalized with all twelve scores.
    metrics = learner.step(batch, raw + 6.0, ended)
    assert metrics["reward/running_mean"] == pytest.approx(18.0)
    assert metrics["reward/normalized_mean"] == pytest.approx(3.0 / learner.reward_stats.std, rel=1e-5)


def test_kl_in_the_loss_leaves_rewards_free_of_kl_and_pulls_towards_the_reference():
    learner, batch, responses = learner_and_batch(perturbed=True, kl_in="loss", kl_estimator="k3", kl_coef=5.0,
                                                  ppo_epochs=4, num_minibatches=1, reward_norm=False)
    no_kl, _, _ = learner_and_batch(perturbed=True, kl_coef=0.0, reward_norm=False)
    scores, finite = torch.zeros(6), torch.ones(6, dtype=torch.bool)
    with_loss_kl, without = learner.targets(batch, scores, finite), no_kl.targets(batch, scores, finite)
    assert torch.allclose(with_loss_kl.advantages, without.advantages)
    assert torch.equal(with_loss_kl.ref_logprobs, without.ref_logprobs)
    before = sequence_kl(learner, batch)
    assert before > 0.1
    metrics = learner.step(batch, scores, torch.tensor([EOS in r for r in responses]))
    assert metrics["ppo/kl_to_ref"] > 0.0  # k3 is non-negative
    assert sequence_kl(learner, batch) < 0.8 * before


def test_entropy_bonus_alone_raises_the_entropy_and_is_off_by_default():
    """Equal scores in every group (rloo: zero advantages) and no KL term: the entropy bonus is the
    only gradient. With it, the sampling distribution's entropy over the responses rises; without
    it (the default), nothing moves."""
    def entropy(learner, batch) -> float:
        with torch.no_grad():
            _, _, per_token = learner.forward(learner.model, batch, need_entropy=True)
        return float(core.masked_mean(per_token, batch.response_mask))

    settings = {"estimator": "rloo", "samples_per_prompt": 2, "kl_coef": 0.0, "ppo_epochs": 2, "num_minibatches": 1}
    for coef in (0.0, 0.1):
        learner, batch, responses = learner_and_batch(entropy_coef=coef, **settings)
        before = entropy(learner, batch)
        learner.step(batch, torch.ones(6), torch.tensor([EOS in r for r in responses]))
        if coef == 0.0:
            assert entropy(learner, batch) == pytest.approx(before, abs=1e-6)
        else:
            assert entropy(learner, batch) > before + 1e-3


def test_approx_kl_stops_the_epochs_early():
    learner, batch, responses = learner_and_batch(ppo_epochs=4, early_stop_kl=1e-6)
    metrics = learner.step(batch, torch.arange(6.0), torch.tensor([EOS in r for r in responses]))
    # The first minibatch sees the sampling policy itself (KL ~ 0) and steps; after that step the
    # next minibatch's KL passes 1e-6 and nothing more steps.
    assert (metrics["ppo/early_stopped"], metrics["ppo/epochs_run"]) == (1.0, 0.5)
    assert all(s["step"].item() == 1 for s in learner.optimizer.state.values())
    unstopped, batch, responses = learner_and_batch(ppo_epochs=3)
    metrics = unstopped.step(batch, torch.arange(6.0), torch.tensor([EOS in r for r in responses]))
    assert (metrics["ppo/early_stopped"], metrics["ppo/epochs_run"]) == (0.0, 3.0)


def ddp_rank(rank: int, directory: str) -> None:
    """One of two DDP ranks. Rank 0's samples are all dropped (non-finite scores), so its own
    approximate KL stays 0: only the KL averaged over both ranks stops it with rank 1. A rank that
    decided alone would step on and wait in the gradient all-reduce until the timeout. Two
    iterations: the stopped minibatch's DDP forward has no backward, and the next one must run."""
    import datetime
    import faulthandler
    import json
    import os

    import torch.distributed as dist

    faulthandler.dump_traceback_later(400, exit=True)  # a hang shows where, in the captured stderr
    dist.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=180))
    learner, batch, responses = learner_and_batch(seed=rank, ppo_epochs=4, early_stop_kl=1e-6)
    learner.model = torch.nn.parallel.DistributedDataParallel(learner.model)
    scores = torch.full((6,), math.nan) if rank == 0 else torch.arange(6.0)
    outcome = []
    for _ in range(2):
        metrics = learner.step(batch, scores, torch.tensor([EOS in r for r in responses]))
        steps = max(s["step"].item() for s in learner.optimizer.state.values())
        outcome.append([metrics["ppo/early_stopped"], metrics["ppo/epochs_run"], steps])
    with open(f"{directory}/rank{rank}.json", "w") as f:
        json.dump(outcome, f)
    dist.barrier()
    # Out at once: tearing down gloo and DDP is not what this test is about (and can block).
    os._exit(0)


def test_early_stop_is_decided_by_all_ranks_together(tmp_path):
    import json

    ctx = multiprocessing.get_context("spawn")
    ranks = [ctx.Process(target=ddp_rank, args=(r, str(tmp_path))) for r in range(2)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(timeout=480)
    for p in ranks:
        if p.is_alive():
            p.kill()  # only the processes this test started
    assert [p.exitcode for p in ranks] == [0, 0], "a rank hung or failed: did the ranks stop at the same minibatch?"
    outcome = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # Each iteration: one minibatch step (its first minibatch sees the sampling policy), then a stop.
    assert outcome == [[[1.0, 0.5, 1], [1.0, 0.5, 2]]] * 2
