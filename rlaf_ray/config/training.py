"""How the adapter learns: PPO (``rlaf-ray train``) and the supervised baseline (``rlaf-ray sft``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from rlaf_ray.config.fields import Number, Section


class PPOSettings(Section):
    num_iterations: int = Field(20, ge=1, description="PPO updates (each: one batch generated, scored, learned).")
    batch_size: int = Field(16, ge=1, description=(
        "Responses per iteration over all learners: prompts x samples_per_prompt."))
    num_minibatches: int = Field(2, ge=1, description="Minibatches per PPO epoch on each learner.")
    ppo_epochs: int = Field(2, ge=1, description="Passes over each batch (few: every pass moves the policy further "
                                                 "from the one that sampled).")
    learning_rate: Number = Field(1.0e-4, gt=0.0, le=1.0, description=(
        "AdamW learning rate of adapter and value head (LoRA: about 10x a full fine-tune's)."))
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field("constant", description=(
        "How the learning rate moves over num_iterations (transformers' schedulers, one step per "
        "iteration): constant; linear or cosine decay to 0, so that the last updates are small and the "
        "run ends where it settled rather than in the middle of a step (PPO anneals it: Schulman et "
        "al. 2017)."))
    weight_decay: Number = Field(0.0, ge=0.0, description="AdamW weight decay (0: a LoRA adapter is not decayed).")
    cliprange: Number = Field(0.2, gt=0.0, le=1.0, description="Policy ratio clip: 1 +- cliprange.")
    cliprange_value: Number = Field(0.2, gt=0.0, description="Value clip around the old values.")
    vf_coef: Number = Field(0.1, ge=0.0, description="Weight of the value loss.")
    entropy_coef: Number = Field(0.0, ge=0.0, description=(
        "Weight of an entropy bonus in the loss (PPO's c2, Schulman et al. 2017): the mean per-token "
        "entropy of the sampling distribution over response tokens is subtracted, so the policy keeps "
        "spreading its probability instead of settling on a few replies. 0: none."))
    estimator: Literal["gae", "rloo", "grpo"] = Field("gae", description=(
        "Advantages. gae: a value head (the critic) and GAE over response tokens (PPO-RLHF); rloo: each "
        "response's sequence reward less the mean of the other responses to its prompt (Ahmadian et al. 2024); "
        "grpo: the reward standardized within its prompt's group (Shao et al. 2024). rloo and grpo build no "
        "value head and need samples_per_prompt >= 2."))
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description=(
        "grpo: what divides a response's reward less its group's mean (TRL's scale_rewards). group: the "
        "group's std (the GRPO paper's; a group of replies that all score alike has its small differences "
        "blown up to unit scale); batch: the std of the rewards over the whole batch, all learners (Lite "
        "PPO); none: nothing (Dr. GRPO)."))
    samples_per_prompt: int = Field(1, ge=1, description=(
        "Responses sampled per prompt, kept together on one learner (the group of rloo and grpo)."))
    critic: Literal["detached", "shared"] = Field("detached", description=(
        "detached: the value head reads the trunk's hidden states without gradient, so the value loss "
        "cannot change the adapter; shared: value-loss gradients also train the adapter."))
    max_staleness: int = Field(0, ge=0, description=(
        "Batches generated ahead while the learner updates (one-step-off and beyond): 0 is the synchronous "
        "loop; k lets a sample come from an adapter up to k updates old. Stale samples are corrected by "
        "decoupled PPO: clipped against the learner's policy before the update, weighted by the truncated "
        "ratio of that policy to the one that sampled (is_truncation)."))
    is_truncation: Number = Field(2.0, gt=0.0, description=(
        "max_staleness > 0: the largest importance weight a stale token gets (truncated importance sampling)."))
    critic_warmup: int = Field(0, ge=0, description=(
        "gae: first iterations in which only the value head learns and the adapter stays the base's, so that "
        "the first policy updates credit the token that decides a reward (e.g. the comma before an insult), not "
        "every token of the response alike; they count in num_iterations."))
    gamma: Number = Field(1.0, ge=0.0, le=1.0, description="Discount over response tokens.")
    lam: Number = Field(0.95, ge=0.0, le=1.0, description="GAE lambda.")
    whiten_advantages: bool = Field(True, description="Normalize advantages over the batch (all learners).")
    positive_advantage_weight: Number = Field(1.0, ge=0.0, le=1.0, description=(
        "Multiplies every positive advantage (after whitening), leaving the negative ones (W-REINFORCE, Zhu et "
        "al. 2025). Lowering a sampled bad reply frees its mass to the policy's other replies in their own "
        "proportions; raising a sampled good one concentrates the policy onto the few that were sampled. "
        "1: the plain estimator; 0: learn from the bad replies alone."))
    max_grad_norm: Annotated[Number, Field(gt=0.0)] | None = Field(1.0, description=(
        "Gradient-norm clip, adapter and value head each on their own; null: no clipping."))
    early_stop_kl: Annotated[Number, Field(gt=0.0)] | None = Field(None, description=(
        "Stop an iteration's remaining minibatch steps when a minibatch's approximate KL to the sampling "
        "policy (per token, mean over learners) exceeds this, before its step; null: never."))
    reward_norm: bool = Field(True, description=(
        "Normalize scores by the running mean and std of all scores so far (all learners, all iterations)."))
    reward_clip: Annotated[Number, Field(gt=0.0)] | None = Field(5.0, description=(
        "Clip normalized scores to +- this (reward_norm only); null: no clip."))
    kl_coef: Number = Field(0.2, ge=0.0, description="beta of the KL penalty (initial, if adaptive).")
    kl_in: Literal["reward", "loss", "both"] = Field("reward", description=(
        "reward: per-token -beta*KL in the shaped reward (PPO-RLHF); loss: beta*mean KL added to the policy "
        "loss, with gradient (GRPO style; only the KL's direct gradient at the visited positions, not its "
        "dependence on which positions the policy visits); both (kl_estimator=full only): the exact KL of each "
        "position in the reward as well as in the loss, which together are the unbiased gradient of "
        "E[score] - beta*KL(policy || base)."))
    kl_estimator: Literal["k1", "k3", "full"] = Field("k1", description=(
        "Per-token KL estimator: k1 = log p/p_ref (the only unbiased choice in the reward); k3 = "
        "low-variance, non-negative (kl_in=loss only); full = the exact KL over the whole vocabulary at each "
        "response position (kl_in=loss or both; keeps the reference's full distribution: batch x tokens x vocab, and "
        "briefly the policy's beside it, whose exact KL the adaptive beta then reads)."))
    kl_forward_weight: Number = Field(0.0, ge=0.0, le=1.0, description=(
        "Share of the forward KL(base || policy) in the loss's KL term at each position: the term is beta x "
        "((1 - w) KL(policy || base) + w KL(base || policy)) (kl_estimator=full, kl_in=loss or both; the reward's "
        "KL stays the reverse one). The reverse KL barely prices a policy that keeps only some of the base's "
        "likely tokens; the forward KL prices each one it drops. 0: the reverse KL alone."))
    adaptive_kl: bool = Field(False, description="Move kl_coef towards target_kl (Ziegler et al. 2019).")
    target_kl: Number = Field(6.0, gt=0.0, description=(
        "Adaptive KL: the KL per response (summed over its tokens) to aim for, as kl/mean reports it: "
        "the exact KL over the vocabulary when kl_estimator=full, the k1 estimate otherwise."))
    kl_coef_min: Annotated[Number, Field(gt=0.0)] | None = Field(None, description=(
        "Adaptive KL: the least beta may fall to (batches under target_kl lower it); null: no floor."))
    kl_horizon: int = Field(64, ge=1, description=(
        "Adaptive KL: samples over which beta moves by up to 20% (64: about 4 default batches); a larger batch "
        "moves it by at most 20% per update."))
    missing_eos_penalty: Annotated[Number, Field(ge=0.0)] | None = Field(None, description=(
        "Subtracted from the (normalized) score of responses that hit max_new_tokens without EOS; null: none."))
    seed: int = Field(0, description="Seed of sampling, minibatch order and initialization.")

    @property
    def value_head(self) -> str:
        """The critic a learner builds: ``critic`` for gae, ``"none"`` for the critic-free estimators."""
        return self.critic if self.estimator == "gae" else "none"

    @property
    def prompts_per_iteration(self) -> int:
        """Prompts drawn per iteration over all learners (each sampled samples_per_prompt times)."""
        return self.batch_size // self.samples_per_prompt

    @model_validator(mode="after")
    def _groups_fit_estimator(self):
        if self.estimator != "gae" and self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt: {self.estimator} compares responses to the same prompt; "
                             f"set samples_per_prompt to 2 or more (got {self.samples_per_prompt})")
        if self.scale_rewards != "group" and self.estimator != "grpo":
            raise ValueError(f"scale_rewards: only grpo scales its rewards ({self.estimator}'s advantages are "
                             f"whitened over the batch by whiten_advantages); leave it at 'group' "
                             f"(got {self.scale_rewards!r})")
        return self

    @model_validator(mode="after")
    def _warmup_needs_a_critic(self):
        if self.critic_warmup and self.estimator != "gae":
            raise ValueError(f"critic_warmup: {self.estimator} has no critic to warm up; set critic_warmup to 0 "
                             f"or estimator to gae")
        if self.critic_warmup >= self.num_iterations:
            raise ValueError(f"critic_warmup: {self.critic_warmup} iterations leave none of num_iterations="
                             f"{self.num_iterations} for the policy")
        return self

    @model_validator(mode="after")
    def _kl_floor_fits(self):
        if self.kl_coef_min is not None and not self.adaptive_kl:
            raise ValueError(f"kl_coef_min: a floor for the adaptive beta; set adaptive_kl to true, or "
                             f"kl_coef_min to null (got {self.kl_coef_min})")
        if self.kl_coef_min is not None and self.kl_coef_min > self.kl_coef:
            raise ValueError(f"kl_coef_min: {self.kl_coef_min} is above the starting kl_coef {self.kl_coef}; "
                             f"the floor must be at most kl_coef")
        return self

    @model_validator(mode="after")
    def _kl_estimator_fits_placement(self):
        if self.kl_estimator != "k1" and self.kl_in == "reward":
            raise ValueError(f"kl_estimator: {self.kl_estimator!r} belongs in the loss (ppo.kl_in=loss); in the "
                             "reward only k1 gives an unbiased KL penalty")
        if self.kl_forward_weight and self.kl_estimator != "full":
            raise ValueError(f"kl_forward_weight: the forward KL is taken over the whole vocabulary; set "
                             f"kl_estimator to full, or kl_forward_weight to 0 (got {self.kl_forward_weight})")
        if self.kl_in == "both" and self.kl_estimator != "full":
            raise ValueError(f"kl_in: 'both' prices the exact KL of each position, in the reward and in the loss; "
                             f"set kl_estimator to full (got {self.kl_estimator!r})")
        return self


class SFTSettings(Section):
    """``rlaf-ray sft``: the supervised baseline on the prompts' reference replies."""

    num_epochs: Number = Field(3.0, gt=0.0, description="Passes over the train split.")
    learning_rate: Number = Field(2.0e-4, gt=0.0, le=1.0, description="Learning rate.")
    batch_size: int = Field(8, ge=1, description="Per learner; global batch = this x learners.")
    eval_split: Literal["train", "eval", "test"] = Field("eval", description="Held-out split whose loss is reported.")
    eval_steps: int = Field(10, ge=1, description="Steps between held-out losses.")
    save_steps: int = Field(50, ge=1, description="Steps between checkpoints.")
    max_length: int = Field(512, ge=2, description="Prompt + reply tokens per example (longer ones are cut).")
    seed: int = Field(0, description="Seed.")
