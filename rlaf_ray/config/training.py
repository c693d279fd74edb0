"""How the adapter learns: PPO (``rlaf-ray train``) and the supervised baseline (``rlaf-ray sft``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from rlaf_ray.config.fields import Number, Section


class PPOSettings(Section):
    num_iterations: int = Field(20, ge=1, description="PPO updates (each: one batch generated, scored, learned).")
    batch_size: int = Field(16, ge=1, description="Prompts per iteration over all learners.")
    num_minibatches: int = Field(2, ge=1, description="Minibatches per PPO epoch on each learner.")
    ppo_epochs: int = Field(4, ge=1, description="Passes over each batch.")
    learning_rate: Number = Field(1.41e-5, gt=0.0, le=1.0, description="AdamW learning rate of adapter and value head.")
    cliprange: Number = Field(0.2, gt=0.0, le=1.0, description="Policy ratio clip: 1 +- cliprange.")
    cliprange_value: Number = Field(0.2, gt=0.0, description="Value clip around the old values.")
    vf_coef: Number = Field(0.1, ge=0.0, description="Weight of the value loss.")
    gamma: Number = Field(1.0, ge=0.0, le=1.0, description="Discount over response tokens.")
    lam: Number = Field(0.95, ge=0.0, le=1.0, description="GAE lambda.")
    whiten_advantages: bool = Field(True, description="Normalize advantages over the batch (all learners).")
    max_grad_norm: Annotated[Number, Field(gt=0.0)] | None = Field(
        1.0, description="Gradient-norm clip; null: no clipping.")
    kl_coef: Number = Field(0.2, ge=0.0, description="beta of the per-token KL penalty (initial, if adaptive).")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="Per-token KL estimator in the reward.")
    adaptive_kl: bool = Field(False, description="Move kl_coef towards target_kl (Ziegler et al. 2019).")
    target_kl: Number = Field(6.0, gt=0.0, description="Adaptive KL: the KL per response to aim for.")
    kl_horizon: int = Field(10000, ge=1, description="Adaptive KL: samples over which beta moves.")
    missing_eos_penalty: Number | None = Field(None, description=(
        "Added to the score of responses that hit max_new_tokens without EOS; null: none."))
    seed: int = Field(0, description="Seed of sampling, minibatch order and initialization.")


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
