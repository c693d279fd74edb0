"""The PPO update on one rank (no Ray): reference via disabled adapter, dropped samples, learning."""

import math
import statistics

import pytest
import torch

from rlaf_ray.config import from_dict
from rlaf_ray.models.policy import (
    PolicyWithValueHead,
    adapter_state_dict,
    load_policy,
    load_tokenizer,
)
from rlaf_ray.ppo import core
from rlaf_ray.ppo.batch import collate
from rlaf_ray.ppo.groups import group_advantages
from rlaf_ray.ppo.update import PPOLearner
from rlaf_ray.roles.rollout import RolloutWorker


@pytest.fixture
def setup(policy_path):
    cfg = from_dict({"model": {"name_or_path": policy_path},
                     "lora": {"dropout": 0.0, "target_modules": ["q_proj", "v_proj", "o_proj"]},
                     # Equal lengths: with advantages whitened over tokens, a rewarded long response
                     # beside punished one-token ones would get below-mean advantages on most tokens.
                     "generation": {"max_new_tokens": 8, "min_new_tokens": 8},
                     "ppo": {"batch_size": 8, "num_minibatches": 2, "ppo_epochs": 2, "learning_rate": 1e-2},
                     "resources": {"learner": {"num_workers": 1}}})
    torch.manual_seed(0)
    model = PolicyWithValueHead(load_policy(cfg.model, cfg.lora))
    learner = PPOLearner(cfg.ppo, model, cfg.generation, load_tokenizer(cfg.model).eos_token_id)
    worker = RolloutWorker(cfg.model, cfg.lora, cfg.generation)
    out = worker.generate(["#Person1#: Hello, how are you?"] * 4 + ["Summarize this."] * 4, seed=0)
    batch = collate(out["prompt_ids"], out["response_ids"], load_tokenizer(cfg.model).pad_token_id)
    return cfg, model, learner, out, batch


def test_logprobs_match_generation_and_reference_is_base(setup):
    cfg, model, learner, out, batch = setup
    with torch.no_grad():
        logprobs, values, _ = learner.forward(model, batch)
        ref = learner._reference_logprobs(batch)
    # A fresh LoRA adapter (B = 0) is the identity: policy == reference.
    assert torch.allclose(logprobs * batch.response_mask, ref * batch.response_mask, atol=1e-5)
    # Left-padded sequences score like the unpadded one alone.
    single = collate(out["prompt_ids"][:1], out["response_ids"][:1], 3)
    with torch.no_grad():
        alone, _, _ = learner.forward(model, single)
    n = len(out["response_ids"][0])
    assert torch.allclose(alone[0, :n], logprobs[0, :n], atol=1e-4)


def test_update_changes_adapter_and_moves_toward_reward(setup):
    cfg, model, learner, out, batch = setup
    before = {k: v.clone() for k, v in adapter_state_dict(model.policy).items()}
    # Reward the first four samples, punish the others: their log-probs must move apart.
    scores = torch.tensor([1.0] * 4 + [-1.0] * 4)
    with torch.no_grad():
        lp0, _, _ = learner.forward(model, batch)
    metrics = learner.step(batch, scores, torch.tensor(out["ended"]))
    with torch.no_grad():
        lp1, _, _ = learner.forward(model, batch)
    after = adapter_state_dict(model.policy)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    seq_delta = ((lp1 - lp0) * batch.response_mask).sum(dim=1)
    assert seq_delta[:4].mean() > seq_delta[4:].mean()
    for key in ("ppo/policy_loss", "ppo/value_loss", "ppo/entropy", "ppo/clip_fraction",
                "ppo/approx_kl", "kl/mean", "reward/mean", "reward/std", "response/length_mean"):
        assert math.isfinite(metrics[key]), key
    assert metrics["reward/mean"] == pytest.approx(0.0)
    assert metrics["reward/non_finite"] == 0


def test_non_finite_scores_are_counted_and_dropped(setup):
    cfg, model, learner, out, batch = setup
    scores = torch.tensor([1.0, math.nan, 0.5, math.inf, 1.0, -math.inf, 0.0, 1.0])
    metrics = learner.step(batch, scores, torch.tensor(out["ended"]))
    assert metrics["reward/non_finite"] == 3
    assert metrics["reward/mean"] == pytest.approx((1.0 + 0.5 + 1.0 + 0.0 + 1.0) / 5)
    assert all(math.isfinite(v) for v in metrics.values())
    assert all(torch.isfinite(v).all() for v in adapter_state_dict(model.policy).values())


def test_adaptive_kl_coefficient_updates(setup):
    cfg, model, _, out, batch = setup
    adaptive = PPOLearner(from_dict({"ppo": {"adaptive_kl": True, "kl_coef": 0.2, "target_kl": 6.0,
                                             "kl_horizon": 100, "batch_size": 8, "num_minibatches": 2},
                                     "resources": {"learner": {"num_workers": 1}}}).ppo, model)
    metrics = adaptive.step(batch, torch.ones(8), torch.tensor(out["ended"]))
    # A fresh adapter has KL 0, below the target: the error clips to -0.2 over 8 samples.
    assert metrics["kl/mean"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["kl/coef"] == 0.2
    assert adaptive.kl_ctl.value == pytest.approx(0.2 * (1 - 0.2 * 8 / 100))
    # With a floor at the start, the same step leaves beta where it was.
    floored = PPOLearner(from_dict({"ppo": {"adaptive_kl": True, "kl_coef": 0.2, "kl_coef_min": 0.2,
                                            "target_kl": 6.0, "kl_horizon": 100, "batch_size": 8,
                                            "num_minibatches": 2},
                                    "resources": {"learner": {"num_workers": 1}}}).ppo, model)
    floored.step(batch, torch.ones(8), torch.tensor(out["ended"]))
    assert floored.kl_ctl.value == 0.2


def test_critic_warmup_trains_the_value_head_only(setup):
    """ppo.critic_warmup: the value head learns, the adapter stays the base's (B = 0), beta stays."""
    cfg, model, learner, out, batch = setup
    adaptive = PPOLearner(from_dict({"ppo": {"adaptive_kl": True, "kl_coef": 0.2, "batch_size": 8,
                                             "num_minibatches": 2, "learning_rate": 1e-2},
                                     "resources": {"learner": {"num_workers": 1}}}).ppo, model)
    adapter = {k: v.clone() for k, v in adapter_state_dict(model.policy).items()}
    head = {k: v.clone() for k, v in model.value_head.state_dict().items()}
    scores = torch.tensor([1.0] * 4 + [-1.0] * 4)
    with torch.no_grad():
        _, v0, _ = adaptive.forward(model, batch)
    metrics = adaptive.step(batch, scores, torch.tensor(out["ended"]), critic_only=True)
    assert all(torch.equal(adapter[k], v) for k, v in adapter_state_dict(model.policy).items())
    assert any(not torch.equal(head[k], v) for k, v in model.value_head.state_dict().items())
    assert adaptive.kl_ctl.value == 0.2 and metrics["ppo/critic_only"] == 1.0
    # The values moved toward the returns: the rewarded responses' values rose against the others'.
    with torch.no_grad():
        _, v1, _ = adaptive.forward(model, batch)
    first = batch.response_mask.argmax(dim=1)
    rows = torch.arange(8)
    gain = (v1 - v0)[rows, first]
    assert gain[:4].mean() > gain[4:].mean()


def test_full_kl_in_the_loss_is_exact_and_grows_as_the_policy_moves(setup):
    cfg, model, _, out, batch = setup
    learner = PPOLearner(from_dict({"ppo": {"kl_in": "loss", "kl_estimator": "full", "kl_coef": 0.1,
                                            "batch_size": 8, "num_minibatches": 2, "learning_rate": 1e-2},
                                    "resources": {"learner": {"num_workers": 1}}}).ppo, model)
    scores = torch.tensor([1.0] * 4 + [-1.0] * 4)
    first = learner.step(batch, scores, torch.tensor(out["ended"]))
    assert first["ppo/kl_to_ref"] >= 0.0  # exact KL: never negative, unlike a sampled k1
    targets = learner.targets(batch, scores, torch.isfinite(scores))
    assert targets.ref_full.shape[:2] == batch.response_ids.shape and targets.ref_full.dim() == 3
    second = learner.step(batch, scores, torch.tensor(out["ended"]))
    assert second["ppo/kl_to_ref"] > first["ppo/kl_to_ref"] > 0.0  # moved from the base, and further


def exact_kl_per_response(learner: PPOLearner, model, batch) -> torch.Tensor:
    """Each response's KL to the base, summed over its positions, from the two whole distributions."""
    policy, reference = [], []
    with torch.no_grad():
        learner.forward(model, batch, full=policy)
        learner._reference_logprobs(batch, reference)
    return (core.full_kl(policy[0], reference[0]) * batch.response_mask).sum(dim=1)


def test_the_controller_reads_the_exact_kl_when_the_loss_computes_it(setup):
    """kl_estimator=full: kl/mean, and what the adaptive beta moves on, is the exact KL per reply
    over the whole vocabulary, not the heavy-tailed k1 sum of the sampled tokens."""
    cfg, model, _, out, batch = setup
    learner = PPOLearner(from_dict({"ppo": {"kl_in": "loss", "kl_estimator": "full", "kl_coef": 0.1,
                                            "adaptive_kl": True, "target_kl": 6.0, "kl_horizon": 100,
                                            "batch_size": 8, "num_minibatches": 2, "learning_rate": 1e-2},
                                    "resources": {"learner": {"num_workers": 1}}}).ppo, model)
    scores, ended = torch.tensor([1.0] * 4 + [-1.0] * 4), torch.tensor(out["ended"])
    learner.step(batch, scores, ended)  # the policy leaves the base
    exact = float(exact_kl_per_response(learner, model, batch).sum() / 8)
    t = learner.targets(batch, scores, torch.isfinite(scores))
    k1 = float(((t.old_untruncated - t.ref_logprobs) * t.mask).sum() / 8)  # the sampled tokens' log-ratios
    assert exact > 0.0 and k1 != pytest.approx(exact, rel=1e-2)  # the two readings differ here
    beta = learner.kl_ctl.value
    metrics = learner.step(batch, scores, ended)
    assert metrics["kl/mean"] == pytest.approx(exact, rel=1e-4)
    assert learner.kl_ctl.value == pytest.approx(beta * (1 + max(exact / 6.0 - 1, -0.2) * 8 / 100), rel=1e-4)


def test_kl_in_both_rewards_each_positions_exact_kl_and_keeps_it_in_the_loss(setup):
    """kl_in=both: a response's reward is its score less beta x its exact KL summed over its
    positions (the score-function part of the KL's gradient), and the loss term still pulls the
    policy towards the base where advantages are zero (the direct part)."""
    cfg, with_head, _, out, batch = setup
    model = PolicyWithValueHead(with_head.policy, critic="none")  # rloo builds no value head

    def learner(kl_in: str, learning_rate: float = 1e-2) -> PPOLearner:
        return PPOLearner(from_dict({"ppo": {"kl_in": kl_in, "kl_estimator": "k1" if kl_in == "reward" else "full",
                                             "kl_coef": 0.5, "estimator": "rloo", "samples_per_prompt": 2,
                                             "whiten_advantages": False, "reward_norm": False, "batch_size": 8,
                                             "num_minibatches": 2, "learning_rate": learning_rate},
                                     "resources": {"learner": {"num_workers": 1}}}).ppo, model)

    scores, ended = torch.tensor([1.0, -1.0] * 4), torch.tensor(out["ended"])
    learner("loss").step(batch, scores, ended)  # the policy leaves the base
    finite = torch.isfinite(scores)
    kl = exact_kl_per_response(learner("both"), model, batch)
    assert bool((kl > 0).all())
    expected = group_advantages(scores - 0.5 * kl, finite, 2, "rloo")
    both = learner("both").targets(batch, scores, finite)
    assert torch.allclose(both.advantages, expected[:, None] * both.mask, atol=1e-5)
    loss_only = learner("loss").targets(batch, scores, finite)
    assert torch.allclose(loss_only.advantages, group_advantages(scores, finite, 2, "rloo")[:, None] * loss_only.mask)
    assert not torch.allclose(both.advantages, loss_only.advantages, atol=1e-3)

    # Each response twice: equal scores and equal KL in a group, so every advantage is 0 and only
    # the loss's KL term can move the policy: back towards the base with it, not at all without.
    twins = batch.select(torch.tensor([0, 0, 1, 1, 4, 4, 5, 5]))
    twin_scores, twin_ended = torch.tensor([1.0] * 4 + [-1.0] * 4), ended[[0, 0, 1, 1, 4, 4, 5, 5]]
    before = exact_kl_per_response(learner("both"), model, twins).sum()
    learner("reward").step(twins, twin_scores, twin_ended)
    assert float(exact_kl_per_response(learner("both"), model, twins).sum()) == pytest.approx(float(before), abs=1e-6)
    learner("both", learning_rate=1e-3).step(twins, twin_scores, twin_ended)  # Adam's first steps: ~lr per weight
    assert exact_kl_per_response(learner("both"), model, twins).sum() < 0.9 * before


def test_a_forward_kl_share_prices_the_tokens_the_policy_drops_and_pulls_it_back(setup):
    """kl_forward_weight=w: the loss's KL term is beta x ((1 - w) KL(policy || base) + w KL(base ||
    policy)) at each position; the forward KL the step reports is the exact one over the vocabulary,
    and where every advantage is 0 the forward term alone pulls the policy back towards the base."""
    cfg, with_head, _, out, batch = setup
    model = PolicyWithValueHead(with_head.policy, critic="none")

    def learner(weight: float, learning_rate: float = 1e-2) -> PPOLearner:
        return PPOLearner(from_dict({"ppo": {"kl_in": "loss", "kl_estimator": "full", "kl_coef": 0.5,
                                             "kl_forward_weight": weight, "estimator": "rloo",
                                             "samples_per_prompt": 2, "whiten_advantages": False,
                                             "reward_norm": False, "batch_size": 8, "num_minibatches": 1,
                                             "ppo_epochs": 1, "learning_rate": learning_rate},
                                     "resources": {"learner": {"num_workers": 1}}}).ppo, model)

    def kl_per_token(twins) -> tuple[float, float]:
        """(reverse, forward) exact KL per response token, from the two whole distributions."""
        policy, reference, reader = [], [], learner(0.0)
        with torch.no_grad():
            reader.forward(model, twins, full=policy)
            reader._reference_logprobs(twins, reference)
        mask = twins.response_mask.float()
        return (float(core.masked_mean(core.full_kl(policy[0], reference[0]), mask)),
                float(core.masked_mean(core.full_kl(reference[0], policy[0]), mask)))

    scores, ended = torch.tensor([1.0, -1.0] * 4), torch.tensor(out["ended"])
    assert "ppo/forward_kl_to_ref" not in learner(0.0).step(batch, scores, ended)  # leaves the base
    reverse, forward = kl_per_token(batch)
    metrics = learner(0.5).step(batch, scores, ended)  # one minibatch: read before its step
    assert metrics["ppo/forward_kl_to_ref"] == pytest.approx(forward, rel=1e-4)
    assert metrics["ppo/kl_to_ref"] == pytest.approx(reverse, rel=1e-4)
    assert forward > 0 and forward != pytest.approx(reverse, rel=1e-2)  # two different divergences

    # Each response twice, equal scores in a group: every advantage is 0, only the KL term moves.
    twins = batch.select(torch.tensor([0, 0, 1, 1, 4, 4, 5, 5]))
    twin_scores, twin_ended = torch.tensor([1.0] * 4 + [-1.0] * 4), ended[[0, 0, 1, 1, 4, 4, 5, 5]]
    before = kl_per_token(twins)[1]
    learner(1.0, learning_rate=1e-3).step(twins, twin_scores, twin_ended)  # the forward KL alone
    assert kl_per_token(twins)[1] < 0.95 * before  # 0.478 -> 0.437 nats per token; unmoved without the term


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_divides_the_centred_rewards_by_the_std_scale_rewards_names(setup, scale):
    cfg, with_head, _, out, batch = setup
    model = PolicyWithValueHead(with_head.policy, critic="none")
    learner = PPOLearner(from_dict({"ppo": {"estimator": "grpo", "samples_per_prompt": 4, "scale_rewards": scale,
                                            "kl_in": "loss", "reward_norm": False, "batch_size": 8},
                                    "resources": {"learner": {"num_workers": 1}}}).ppo, model)
    scores = [1.0, -1.0, 3.0, 0.0, 2.0, 2.0, 0.0, 5.0]
    groups = [scores[:4], scores[4:]]
    centred = [s - statistics.mean(g) for g in groups for s in g]
    divisor = {"group": [statistics.stdev(g) for g in groups for _ in g],
               "batch": [statistics.stdev(scores)] * 8, "none": [1.0] * 8}[scale]
    expected = torch.tensor([c / d for c, d in zip(centred, divisor)])
    t = learner.targets(batch, torch.tensor(scores), torch.ones(8, dtype=torch.bool))
    assert torch.allclose(t.advantages, expected[:, None] * t.mask, rtol=1e-3, atol=1e-4)


def test_the_positive_advantage_weight_reaches_the_loss_after_whitening(setup):
    """rloo, whitened: with weight 0.25 every rewarded reply's advantage is a quarter of what the
    plain estimator gives, every punished reply's the same."""
    cfg, with_head, _, out, batch = setup
    model = PolicyWithValueHead(with_head.policy, critic="none")

    def advantages(weight: float) -> torch.Tensor:
        ppo = from_dict({"ppo": {"estimator": "rloo", "samples_per_prompt": 4, "kl_in": "loss", "batch_size": 8,
                                 "reward_norm": False, "positive_advantage_weight": weight},
                         "resources": {"learner": {"num_workers": 1}}}).ppo
        t = PPOLearner(ppo, model).targets(batch, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0]),
                                           torch.ones(8, dtype=torch.bool))
        return t.advantages[:, 0]

    plain, weighted = advantages(1.0), advantages(0.25)
    assert (plain > 0).sum() == 5 and (plain < 0).sum() == 3
    assert torch.allclose(weighted, torch.where(plain > 0, plain / 4, plain))


def test_a_decaying_learning_rate_steps_once_per_iteration_and_resumes_where_it_was(setup):
    """ppo.lr_scheduler=linear over 4 iterations: 1, 3/4, 1/2, 1/4 of the rate (never 0: the
    last update still learns); a learner restored from a checkpoint's state goes on from there."""
    cfg, model, _, out, batch = setup

    def learner(schedule: str) -> PPOLearner:
        return PPOLearner(from_dict({"ppo": {"lr_scheduler": schedule, "num_iterations": 4, "learning_rate": 1e-2,
                                             "batch_size": 8, "num_minibatches": 2},
                                     "resources": {"learner": {"num_workers": 1}}}).ppo, model)

    scores, ended = torch.tensor([1.0] * 4 + [-1.0] * 4), torch.tensor(out["ended"])
    first = learner("linear")
    rates = [first.step(batch, scores, ended)["ppo/learning_rate"] for _ in range(2)]
    resumed = learner("linear")
    resumed.load_state_dict(first.state_dict())
    rates += [resumed.step(batch, scores, ended)["ppo/learning_rate"] for _ in range(2)]
    assert rates == pytest.approx([1e-2, 7.5e-3, 5e-3, 2.5e-3])
    constant = learner("constant")
    assert [constant.step(batch, scores, ended)["ppo/learning_rate"] for _ in range(2)] == [1e-2, 1e-2]


def test_stale_samples_are_weighted_by_the_truncated_ratio(setup):
    """Samples whose behaviour log-probs equal the learner's (nothing changed since sampling) get
    weight 1; a behaviour policy that made a token half as likely doubles its weight."""
    cfg, model, learner, out, batch = setup
    with torch.no_grad():
        proximal, _, _ = learner.forward(model, batch)
    scores = torch.tensor([1.0] * 4 + [-1.0] * 4)
    targets = learner.targets(batch, scores, torch.isfinite(scores))
    same = learner.off_policy(targets, proximal, torch.ones(8, dtype=torch.long))
    assert torch.equal(same.is_weights, torch.ones_like(same.is_weights))
    assert torch.equal(same.advantages, targets.advantages)
    halved = learner.off_policy(targets, proximal - math.log(2.0), torch.ones(8, dtype=torch.long))
    mask = targets.mask.bool()
    assert torch.allclose(halved.is_weights[mask], torch.full_like(halved.is_weights[mask], 2.0))
    metrics = learner.off_policy_metrics(halved)
    assert metrics["offpolicy/staleness_max"] == 1.0 and metrics["offpolicy/is_weight_mean"] == pytest.approx(2.0)
    quartered = learner.off_policy(targets, proximal - math.log(4.0), torch.ones(8, dtype=torch.long))
    assert torch.equal(quartered.is_weights[mask], torch.full_like(quartered.is_weights[mask], 2.0))  # truncated
    assert learner.off_policy_metrics(quartered)["offpolicy/is_truncated_fraction"] == 1.0


def test_an_unreadable_latest_checkpoint_falls_back_to_the_one_before(setup, tmp_path, capsys):
    from ray.train import Checkpoint

    from rlaf_ray.roles.checkpoints import LoopState, restore, save_checkpoint

    cfg, model, learner, out, batch = setup
    ended = torch.tensor(out["ended"])
    save_checkpoint(tmp_path / "checkpoint_000002", model, learner, LoopState(iteration=2, batches_in_epoch=2))
    kept = {k: v.clone() for k, v in adapter_state_dict(model.policy).items()}
    learner.step(batch, torch.linspace(-1, 1, 8), ended)
    save_checkpoint(tmp_path / "checkpoint_000004", model, learner, LoopState(iteration=4, batches_in_epoch=4))
    learner.step(batch, torch.linspace(-1, 1, 8), ended)  # the live model moves on from both
    torn = tmp_path / "checkpoint_000004" / "adapter" / "adapter_model.safetensors"
    torn.write_bytes(torn.read_bytes()[:100])  # a write cut short

    state = restore(Checkpoint.from_directory(str(tmp_path / "checkpoint_000004")), model, learner)

    assert state.iteration == 2 and state.batches_in_epoch == 2
    assert all(torch.equal(kept[k], v) for k, v in adapter_state_dict(model.policy).items())
    assert "checkpoint_000004 cannot be read" in capsys.readouterr().err
    (tmp_path / "checkpoint_000002" / "state.json").unlink()
    with pytest.raises(RuntimeError, match="no readable checkpoint"):
        restore(Checkpoint.from_directory(str(tmp_path / "checkpoint_000004")), model, learner)


def test_a_checkpoint_that_would_not_fit_is_refused(setup, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from rlaf_ray.roles import checkpoints

    cfg, model, learner, out, batch = setup
    needed = checkpoints.checkpoint_bytes(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert needed == 3 * 4 * trainable + 2**20  # float32 tensors and two AdamW moments
    checkpoints.check_free_space(tmp_path, needed)  # this disk has room
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * needed, 9 * needed, needed))  # a full disk
    with pytest.raises(OSError, match=rf"MiB free in {tmp_path}, a checkpoint needs about"):
        checkpoints.check_free_space(tmp_path, needed)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def nucleus(policy_path):
    """A fresh adapter (B = 0) sampling 8 responses at top_p 0.9, its learner and their targets."""
    cfg = from_dict({"model": {"name_or_path": policy_path},
                     "lora": {"dropout": 0.0, "target_modules": ["q_proj", "v_proj", "o_proj"]},
                     "generation": {"max_new_tokens": 8, "top_p": 0.9},
                     "ppo": {"batch_size": 8, "num_minibatches": 1, "early_stop_kl": 0.02},
                     "resources": {"learner": {"num_workers": 1}}})
    torch.manual_seed(0)
    model = PolicyWithValueHead(load_policy(cfg.model, cfg.lora))
    tokenizer = load_tokenizer(cfg.model)
    out = RolloutWorker(cfg.model, cfg.lora, cfg.generation).generate(["#Person1#: Hello, how are you?\n#Person2#:"] * 8,
                                                                      seed=0)
    batch = collate(out["prompt_ids"], out["response_ids"], tokenizer.pad_token_id)
    learner = PPOLearner(cfg.ppo, model, cfg.generation, tokenizer.eos_token_id)
    targets = learner.targets(batch, torch.linspace(0, 1, 8), torch.ones(8, dtype=torch.bool))
    return cfg, model, tokenizer, batch, learner, targets


def test_nucleus_sampling_alone_is_no_kl_to_the_base(nucleus):
    """With top_p < 1 the learner scores the sampled (truncated, renormalized) distribution, but
    the KL to the base compares untruncated log-probs: an adapter that has not moved (B = 0) is at
    KL 0 exactly, though its sampled tokens' log-probs exceed the base's."""
    targets = nucleus[-1]
    mask = targets.mask.bool()
    assert torch.equal(targets.kl[mask], torch.zeros_like(targets.kl[mask]))
    gain = (targets.old_logprobs - targets.ref_logprobs)[mask]
    assert (gain >= -1e-5).all() and (gain > 1e-3).any()  # the nucleus renormalized: sampled tokens gain


def test_a_token_leaving_the_nucleus_does_not_stop_the_epochs(nucleus):
    """Under top-p, a sampled token at the nucleus' edge can leave it after a small step; its
    sampled log-prob falls to the floor. That is no sign the policy moved far: the early stop
    reads the untruncated log-probs. Without truncation the same log-ratio is a real move."""
    import dataclasses

    from rlaf_ray.config import GenerationSettings

    cfg, model, tokenizer, batch, learner, targets = nucleus
    left = dataclasses.replace(targets, old_logprobs=targets.old_logprobs.clone())
    left.old_logprobs[0, 0] += 30.0  # now 30 nats below where it was sampled: out of the nucleus
    everything = torch.arange(8)
    assert learner.minibatch_step(batch, left, everything) is not None  # the step is taken

    plain = PPOLearner(cfg.ppo, model, GenerationSettings(max_new_tokens=8), tokenizer.eos_token_id)
    # Nothing truncates: the sampled log-probs are the untruncated ones.
    moved = dataclasses.replace(left, old_untruncated=left.old_logprobs)
    assert plain.minibatch_step(batch, moved, everything) is None  # a real 30-nat move: stopped
