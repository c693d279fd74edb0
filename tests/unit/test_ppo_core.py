"""PPO math against values computed by hand."""

import math

import pytest
import torch

from rlaf_ray.ppo import core

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])

X = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -7.0, 9.0]])


def test_masked_mean_and_variance():
    # masked entries: 1, 2, 3, 4, 5 -> mean 3, unbiased variance (4+1+0+1+4)/4 = 2.5
    assert core.masked_mean(X, MASK).item() == pytest.approx(3.0)
    assert core.masked_var(X, MASK).item() == pytest.approx(2.5)
    assert core.masked_var(X, MASK, unbiased=False).item() == pytest.approx(2.0)
    assert core.masked_mean(X, MASK, dim=1).tolist() == pytest.approx([2.0, 4.5])


def test_masked_mean_of_empty_mask_is_zero_not_nan():
    assert core.masked_mean(X, torch.zeros_like(MASK)).item() == 0.0


def test_masked_whiten():
    w = core.masked_whiten(X, MASK)
    expected = (torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]) - 3.0) / math.sqrt(2.5)
    assert w[MASK.bool()].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    assert w[~MASK.bool()].tolist() == [0.0, 0.0, 0.0]
    kept = core.masked_whiten(X, MASK, shift_mean=False)
    assert core.masked_mean(kept, MASK).item() == pytest.approx(3.0, abs=1e-6)


def test_kl_estimators():
    logp = torch.tensor([math.log(0.5)])
    ref = torch.tensor([math.log(0.25)])
    log_r = math.log(2.0)
    assert core.kl_estimate(logp, ref, "k1").item() == pytest.approx(log_r)
    assert core.kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * log_r**2)
    # k3 = (p_ref/p - 1) - log(p_ref/p) = (0.5 - 1) + log 2
    assert core.kl_estimate(logp, ref, "k3").item() == pytest.approx(-0.5 + log_r)
    assert core.kl_estimate(ref, ref, "k3").item() == 0.0
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        core.kl_estimate(logp, ref, "k4")


def test_shaped_rewards_put_score_on_last_response_token():
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.5, -0.5, 9.0, 9.0]])
    r = core.shaped_rewards(torch.tensor([1.0, 2.0]), kl, MASK, kl_coef=0.5)
    assert r.tolist()[0] == pytest.approx([-0.05, -0.1, -0.15 + 1.0, 0.0])
    assert r.tolist()[1] == pytest.approx([-0.25, 0.25 + 2.0, 0.0, 0.0])


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 7.0]])  # the last value sits on padding
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    gamma, lam = 0.9, 0.8
    d2 = 1.0 + 0.0 - 0.3  # no bootstrap past the last real token
    d1 = 0.0 + gamma * 0.3 - 0.4
    d0 = 0.0 + gamma * 0.4 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    adv, ret = core.gae(rewards, values, mask, gamma, lam)
    assert adv.tolist()[0] == pytest.approx([a0, a1, a2, 0.0])
    assert ret.tolist()[0] == pytest.approx([a0 + 0.5, a1 + 0.4, a2 + 0.3, 0.0])


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.7, 1.1]]))  # ratios 1.5, 0.7, 1.1
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    mask = torch.ones(1, 3)
    out = core.clipped_policy_loss(new, old, adv, mask, cliprange=0.2)
    # per token max(-A r, -A clip(r)): max(-1.5, -1.2) = -1.2; max(0.7, 0.8) = 0.8; max(-2.2, -2.2)
    assert out.loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3)
    assert out.clip_fraction.item() == pytest.approx(2 / 3)
    expected_kl = 0.5 * sum(math.log(r) ** 2 for r in (1.5, 0.7, 1.1)) / 3
    assert out.approx_kl.item() == pytest.approx(expected_kl, rel=1e-5)


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[0.5, 1.0]])
    loss, clipfrac = core.clipped_value_loss(values, old, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: unclipped (1-0.5)^2=0.25, clipped (0.2-0.5)^2=0.09 -> 0.25; token 1: 1.0 both
    assert loss.item() == pytest.approx(0.5 * (0.25 + 1.0) / 2)
    assert clipfrac.item() == 0.0


def test_adaptive_kl_controller_moves_toward_target():
    ctl = core.AdaptiveKLController(0.2, target=6.0, horizon=100)
    ctl.update(current_kl=12.0, n_steps=10)  # error clipped to +0.2 -> x1.02
    assert ctl.value == pytest.approx(0.2 * 1.02)
    ctl.update(current_kl=3.0, n_steps=10)  # error -0.5 clipped to -0.2 -> x0.98
    assert ctl.value == pytest.approx(0.2 * 1.02 * 0.98)
    # A batch larger than the horizon moves beta by at most 20%, not 0.2 * 256/64 = 80%.
    big = core.AdaptiveKLController(0.2, target=6.0, horizon=64)
    big.update(current_kl=0.0, n_steps=256)
    assert big.value == pytest.approx(0.2 * 0.8)
    fixed = core.FixedKLController(0.3)
    fixed.update(100.0, 10)
    assert fixed.value == 0.3


def test_adaptive_kl_controller_stops_at_its_floor_and_still_rises():
    ctl = core.AdaptiveKLController(0.3, target=0.25, horizon=64, floor=0.2)
    ctl.update(current_kl=0.0, n_steps=64)  # x0.8 -> 0.24, over the floor
    assert ctl.value == pytest.approx(0.24)
    ctl.update(current_kl=0.0, n_steps=64)  # x0.8 -> 0.192: held at 0.2
    assert ctl.value == pytest.approx(0.2)
    ctl.update(current_kl=0.5, n_steps=64)  # over the target: x1.2 from the floor
    assert ctl.value == pytest.approx(0.24)


# ---------------------------------------------------------------------------------------------
# Non-finite values at padding positions, clamped log-ratios

INF, NAN = math.inf, math.nan
# The masked entries of X, with inf/NaN where MASK is 0.
X_BAD = torch.tensor([[1.0, 2.0, 3.0, INF], [4.0, 5.0, NAN, -INF]])


def test_masked_statistics_ignore_inf_and_nan_at_padding():
    assert core.masked_sum(X_BAD, MASK).item() == pytest.approx(15.0)
    assert core.masked_sum(X_BAD, MASK, dim=1).tolist() == pytest.approx([6.0, 9.0])
    assert core.masked_mean(X_BAD, MASK).item() == pytest.approx(3.0)
    assert core.masked_var(X_BAD, MASK).item() == pytest.approx(2.5)
    w = core.masked_whiten(X_BAD, MASK)
    assert torch.isfinite(w).all() and w[~MASK.bool()].tolist() == [0.0, 0.0, 0.0]


def test_global_masked_stats_ignore_inf_at_padding():
    from rlaf_ray.ppo.distributed import global_masked_stats

    mean, var = global_masked_stats(X_BAD, MASK)
    assert (mean.item(), var.item()) == pytest.approx((3.0, 2.5))


def test_rewards_and_gae_stay_finite_with_inf_kl_at_padding():
    kl = torch.tensor([[0.1, 0.2, 0.3, INF], [0.5, -0.5, NAN, -INF]])
    r = core.shaped_rewards(torch.tensor([1.0, 2.0]), kl, MASK, kl_coef=0.0)
    assert r.tolist() == [[0.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 0.0]]
    values = torch.tensor([[0.5, 0.4, 0.3, NAN], [0.1, 0.2, INF, INF]])
    adv, ret = core.gae(r, values, MASK, 1.0, 1.0)
    # gamma = lam = 1: the advantage is the return to go minus the value
    assert adv.flatten().tolist() == pytest.approx([0.5, 0.6, 0.7, 0.0, 1.9, 1.8, 0.0, 0.0])
    assert torch.isfinite(ret).all()


def test_policy_loss_clamps_the_log_ratio():
    old = torch.zeros(1, 2)
    new = torch.tensor([[100.0, 0.0]], requires_grad=True)  # ratio e^100 = inf unclamped
    out = core.clipped_policy_loss(new, old, torch.tensor([[-1.0, 0.0]]), torch.ones(1, 2), cliprange=0.2)
    # token 0: max(-A r, -A clip(r)) = max(e^20, 1.2) with the log-ratio clamped to 20
    assert out.loss.item() == pytest.approx(math.exp(20.0) / 2, rel=1e-5)
    assert out.approx_kl.item() == pytest.approx(0.5 * 20.0**2 / 2)
    # A positive advantage takes the clipped branch: zero gradient, not 0 * inf = NaN.
    new.grad = None
    core.clipped_policy_loss(new, old, torch.tensor([[1.0, 0.0]]), torch.ones(1, 2), 0.2).loss.backward()
    assert torch.isfinite(new.grad).all()


def test_policy_loss_and_gradient_finite_with_inf_and_nan_at_padding():
    new = torch.tensor([[0.1, -INF], [0.2, NAN]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0], [0.0, -INF]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    adv = torch.tensor([[1.0, 5.0], [-1.0, 5.0]])
    out = core.clipped_policy_loss(new, old, adv, mask, cliprange=0.2)
    # token (0,0): r = e^0.1 = 1.105 -> max(-1.105, -1.105); token (1,0): r = e^0.2 -> max(1.221, 1.2)
    assert out.loss.item() == pytest.approx((-math.exp(0.1) + math.exp(0.2)) / 2, rel=1e-5)
    out.loss.backward()
    assert torch.isfinite(new.grad).all() and new.grad[:, 1].tolist() == [0.0, 0.0]


def test_k3_is_finite_for_a_runaway_log_ratio():
    # log r = -100: k3 = (e^100 - 1) - 100 would be inf; log r is clamped to -20.
    value = core.kl_estimate(torch.tensor([-100.0]), torch.tensor([0.0]), "k3").item()
    assert value == pytest.approx(math.expm1(20.0) - 20.0)
    # A sampled token pushed out of top-k (log-prob near -3e38): still finite and >= 0.
    value = core.kl_estimate(torch.tensor([-3e38]), torch.tensor([-2.0]), "k3").item()
    assert value == pytest.approx(math.expm1(20.0) - 20.0)


# ---------------------------------------------------------------------------------------------
# Running score statistics


def test_running_moments_merge_batches_like_one():
    m = core.RunningMoments()
    assert m.std == 1.0  # nothing seen: no scaling
    # batch [1, 2, 3] then [4, 5]: as if [1, 2, 3, 4, 5] (mean 3, unbiased variance 2.5)
    m.update(3, 6.0, 14.0)
    assert (m.count, m.mean, m.std) == pytest.approx((3, 2.0, 1.0))
    m.update(2, 9.0, 41.0)
    assert (m.count, m.mean, m.std) == pytest.approx((5, 3.0, math.sqrt(2.5)))
    m.update(0, 0.0, 0.0)  # an empty batch changes nothing
    assert m.count == 5
    x = torch.tensor([3.0, 3.0 + math.sqrt(2.5), 100.0])
    assert m.normalize(x).tolist()[:2] == pytest.approx([0.0, 1.0])
    assert m.normalize(x, clip=5.0).tolist()[2] == 5.0
    restored = core.RunningMoments()
    restored.load_state_dict(m.state_dict())
    assert (restored.count, restored.mean, restored.std) == (m.count, m.mean, m.std)


def test_full_kl_by_hand():
    """KL over the whole vocabulary: sum_v p(v) log(p(v)/q(v)), per position."""
    p = torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    q = torch.tensor([[0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    kl = core.full_kl(p.log(), q.log())
    assert kl[0].item() == pytest.approx(0.5 * math.log(2) + 0.25 * math.log(0.5))
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)
    # a token the reference (almost) never emits costs its share of mass times the log-ratio
    rare = core.full_kl(torch.tensor([0.9, 0.1]).log(), torch.tensor([1 - 1e-4, 1e-4]).log())
    assert rare.item() == pytest.approx(0.9 * math.log(0.9 / (1 - 1e-4)) + 0.1 * math.log(0.1 / 1e-4))


def test_truncated_is_weights_by_hand():
    """pi_prox / pi_behav per token of a stale response, capped; exactly 1 for fresh responses."""
    proximal = torch.tensor([[math.log(0.5), math.log(0.9)], [math.log(0.5), math.log(0.2)]])
    behaviour = torch.tensor([[math.log(0.25), math.log(0.1)], [math.log(0.25), math.log(0.4)]])
    weights = core.truncated_is_weights(proximal, behaviour, torch.tensor([True, False]), truncation=3.0)
    assert weights[0].tolist() == pytest.approx([2.0, 3.0])  # 0.9 / 0.1 = 9, truncated to 3
    assert weights[1].tolist() == [1.0, 1.0]  # not stale: no correction, whatever the ratio


def test_weigh_positive_scales_the_rewarded_and_keeps_the_punished():
    """An rloo group of one toxic reply and three clean ones (rewards 0, 1, 1, 1) and a group with
    nothing to compare: the toxic reply's -1 stays, each clean reply's +1/3 becomes +1/30."""
    advantages = torch.tensor([-1.0, 1 / 3, 1 / 3, 1 / 3, 0.0, 0.0])
    assert core.weigh_positive(advantages, 0.1).tolist() == pytest.approx([-1.0, 1 / 30, 1 / 30, 1 / 30, 0.0, 0.0])
    assert core.weigh_positive(advantages, 0.0).tolist() == pytest.approx([-1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert torch.equal(core.weigh_positive(advantages, 1.0), advantages)


def test_a_punished_token_hands_its_mass_to_the_others_in_their_proportions():
    """Why ``weigh_positive`` exists, on one softmax: a step down on a sampled bad token moves the
    ratio of two good tokens by eta x A x (p_a - p_b) in log space (mass goes to each in proportion to
    its probability); the same-size step up on a sampled good token moves that ratio by
    eta x A x (1 - p_a + p_b), concentrating onto the token that happened to be sampled."""
    logits = torch.tensor([1.0, 0.5, 0.0, -0.5])  # tokens 0-2 good, 3 bad
    eta = 0.5

    def step(token: int, advantage: float) -> torch.Tensor:
        z = logits.clone().requires_grad_(True)
        (-advantage * torch.log_softmax(z, dim=0)[token]).backward()
        return torch.log_softmax(logits - eta * z.grad, dim=0)

    p = torch.softmax(logits, dim=0)
    base = torch.log_softmax(logits, dim=0)
    punished, rewarded = step(3, -1.0), step(0, 1.0)
    moved_down = (punished[0] - punished[1]) - (base[0] - base[1])
    moved_up = (rewarded[0] - rewarded[1]) - (base[0] - base[1])
    assert moved_down.item() == pytest.approx(eta * (p[0] - p[1]).item(), rel=1e-5)
    assert moved_up.item() == pytest.approx(eta * (1 - p[0] + p[1]).item(), rel=1e-5)
    assert moved_up > 4 * moved_down  # 0.41 nats against 0.09
