"""``rlaf-ray`` command line: ``rlaf-ray train --config FILE [key=value ...]``."""

from __future__ import annotations

import argparse
import sys

from rlaf_ray.config import ConfigError, load_config

TRAIN_EPILOG = """\
overrides use dotted keys, values parsed as YAML, e.g.
  rlaf-ray train --config jobs/configs/offline_tiny.yaml ppo.num_iterations=5 lora.r=16 \\
      generation.max_new_tokens=[8,16] run.name=try2
A run started again with the same run.name and run.output_dir resumes from its latest checkpoint.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlaf-ray",
        description="Detoxify language models with PPO from automatic feedback, distributed on Ray.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = commands.add_parser(
        "train", help="PPO training with LoRA: rollout, reward and learner roles on Ray",
        description="PPO training with LoRA on Ray; writes metrics, checkpoints and final/adapter.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", required=True, help="YAML configuration file")
    train.add_argument("--address", default=None,
                       help="Ray cluster address (default: RAY_ADDRESS, else a local Ray instance)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.command == "train":
            from rlaf_ray.train import train  # heavy imports only when needed

            run_dir = train(cfg, address=args.address)
            print(f"[rlaf] done: adapter in {run_dir / 'final' / 'adapter'}")
    except ConfigError as err:
        for line in err.problems:
            print(f"rlaf-ray: error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
