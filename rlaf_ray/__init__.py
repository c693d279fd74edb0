"""rlaf_ray: detoxify language models with PPO from automatic feedback, distributed on Ray."""

__version__ = "0.1.0"
