"""The Ray roles of a PPO run, one module each.

- ``rollout``: ``RolloutWorker``, an actor holding the base policy and the current adapter; it
  samples responses.
- ``reward``: ``RewardWorker``, an actor scoring responses (a classifier's label score, or a
  callable).
- ``learner``: ``learner_loop``, the PPO loop on every Ray Train rank, and the checkpoint layout.

Each role takes the configuration sections it reads, as objects.
"""
