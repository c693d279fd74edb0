"""``rlaf-ray`` command line: train, tune, sft, toxicity, compare, report, demo, merge, generate, config.

Every command validates its configuration before importing torch, transformers or Ray (the
``rlaf_ray.config`` package needs only pydantic and PyYAML), so a typo is reported at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from rlaf_ray import __version__
from rlaf_ray.config import ConfigError, dump_yaml, json_schema, load_config
from rlaf_ray.console import VERBOSE_ENV, init_ray, quiet_process
from rlaf_ray.interrupt import RunInterrupted
from rlaf_ray.storage import claim_out, local_copy, open_run, publish
from rlaf_ray.worker_setup import skip_bitsandbytes

DEMO_CONFIG = "jobs/configs/offline_tiny.yaml"
RESUME_HELP = ("continue the run in <run.output_dir>/<run.name> with changed settings that do not change "
               "what it learned (more ppo.num_iterations, checkpointing, placement, evaluation); the previous "
               "config.yaml is kept as config.<n>.yaml")
TRAIN_EPILOG = """\
overrides use dotted keys, values parsed as YAML, e.g.
  rlaf-ray train --config jobs/configs/offline_tiny.yaml ppo.num_iterations=5 lora.r=16 \\
      generation.max_new_tokens=[8,16] run.name=try2
A run started again with the same run.name and run.output_dir resumes from its latest checkpoint
if its settings are the same; --resume also lets it continue with more iterations, another checkpoint
cadence or placement (rlaf_ray.run_guard.RESUMABLE); other changes need a new run.name.
"""
TUNE_EPILOG = """\
the search space is the config's tune section, e.g.
  tune:
    search_space:
      lora.r: {choice: [4, 8, 16, 32, 64]}
      ppo.learning_rate: {loguniform: [1.0e-5, 1.0e-3]}
    num_samples: 8
  rlaf-ray tune --config jobs/configs/tune_offline_tiny.yaml tune.num_samples=4
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlaf-ray",
        description="Detoxify language models with PPO from automatic feedback, distributed on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"rlaf-ray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show everything: Ray and Ray Data progress, library warnings, weight-loading bars")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    joins_a_cluster = _training_commands(commands) + [_toxicity_command(commands)]
    local_ray = _report_commands(commands)  # they read run directories on this machine
    for sub in joins_a_cluster:
        sub.add_argument("--address", default=None,
                         help="Ray cluster address (default: RAY_ADDRESS, else a local Ray instance)")
    for sub in joins_a_cluster + local_ray:
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")
    _model_commands(commands)
    return parser


def _training_commands(commands) -> list[argparse.ArgumentParser]:
    """train, tune, sft, demo."""
    raw = argparse.RawDescriptionHelpFormatter
    train = commands.add_parser(
        "train", help="PPO training with LoRA: rollout, reward and learner roles on Ray",
        description="PPO training with LoRA on Ray; writes metrics, checkpoints, final/adapter and "
                    "(evaluation.after_train) the before/after report.", epilog=TRAIN_EPILOG,
        formatter_class=raw)
    train.add_argument("--config", required=True, help="YAML configuration file")
    train.add_argument("--resume", action="store_true", help=RESUME_HELP)

    tune = commands.add_parser(
        "tune", help="Ray Tune search (e.g. LoRA rank, learning rate): every trial a full PPO run",
        description="Search the fields in the config's tune.search_space with ASHA early stopping; "
                    "writes trials.csv, trials.md and best_config.yaml in <run.output_dir>/<run.name>.",
        epilog=TUNE_EPILOG, formatter_class=raw)
    tune.add_argument("--config", required=True, help="YAML configuration file with a tune section")
    tune.add_argument("--resume", action="store_true",
                      help="continue the stopped search in <run.output_dir>/<run.name> (same config)")

    sft = commands.add_parser(
        "sft", help="supervised fine-tuning baseline (LoRA) on the prompts' reference replies",
        description="The same model, LoRA, data and resources as train, learning the reference replies "
                    "with TRL's SFTTrainer on Ray Train; writes final/adapter and sft_metrics.json.",
        epilog=TRAIN_EPILOG.replace("train", "sft"), formatter_class=raw)
    sft.add_argument("--config", required=True, help="YAML configuration file")
    sft.add_argument("--resume", action="store_true", help=RESUME_HELP)

    demo = commands.add_parser(
        "demo", help="the offline detox world: measure, train, measure again, report",
        description="Runs the whole mission on a laptop CPU with no hub: tiny policy and classifier built "
                    "offline, PPO on local Ray, the toxicity meter before and after, and the report. Each "
                    "demo is a new run, <run.name>-<date>-<time>, unless run.name=... is given.")
    demo.add_argument("--config", default=DEMO_CONFIG, help=f"configuration (default {DEMO_CONFIG})")

    return [train, tune, sft, demo]


def _toxicity_command(commands) -> argparse.ArgumentParser:
    tox = commands.add_parser(
        "toxicity", help="measure a model's toxicity (RealToxicityPrompts protocol)",
        description="k nucleus samples per prompt, scored by the classifier's toxic-label probability "
                    "on the continuation only: expected maximum toxicity, toxicity probability, mean/std, "
                    "perplexity, distinct-1/2/3. Options set the evaluation.* and data.* fields.")
    tox.add_argument("--config", help="YAML configuration file (data, model and evaluation sections)")
    tox.add_argument("--model", help="policy name or path (model.name_or_path)")
    tox.add_argument("--adapter", help="PEFT adapter directory to apply on the model")
    tox.add_argument("--dataset", help="data.source: dialogsum, real_toxicity_prompts, dialoconan, files")
    tox.add_argument("--data-path", help="data.path: local file or hub dataset name")
    tox.add_argument("--split", help="evaluation.split: train, eval or test")
    tox.add_argument("--samples", type=int, help="evaluation.samples_per_prompt (default 25)")
    tox.add_argument("--max-prompts", type=int, help="evaluation.max_prompts")
    tox.add_argument("--classifier", help="evaluation.classifier (default: the reward classifier)")
    tox.add_argument("--actors", type=int, help="actor-pool size of the generator and each scorer")
    tox.add_argument("--out", default="results/toxicity", help="directory for metrics.json and samples.jsonl")
    tox.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    return tox


def _report_commands(commands) -> list[argparse.ArgumentParser]:
    """compare, report."""
    compare = commands.add_parser(
        "compare", help="base model vs the adapters of finished runs (e.g. SFT and RL), same prompts and seeds",
        description="Measure the base model and each run's final adapter with the toxicity meter on the "
                    "first run's held-out split; write comparison.csv, .md and .png.")
    compare.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help="run directories")
    compare.add_argument("--out", default="results/comparison", help="output directory")
    compare.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)

    report = commands.add_parser(
        "report", help="before/after report of a finished run",
        description="Measure the base model and the run's final adapter on the held-out split with the "
                    "same prompts and seeds; write tables (CSV, Markdown) and plots to <run>/report.")
    report.add_argument("--run", required=True, help="run directory (holding config.yaml and final/adapter)")

    return [compare, report]


def _model_commands(commands) -> None:
    """merge, generate (models on this machine, no Ray), config."""
    merge = commands.add_parser(
        "merge", help="fold a LoRA adapter into its base model (a standard from_pretrained directory)",
        description="merge_and_unload: the merged model and its tokenizer, saved as safetensors.")
    merge.add_argument("--base", help="base model name, path or tiny:<name> (default: the one the adapter's "
                                      "adapter_config.json names)")
    merge.add_argument("--cache-dir", default="~/.cache/rlaf_ray", help="where tiny:<name> models are built and cached")
    merge.add_argument("--adapter", required=True, help="PEFT adapter directory (e.g. results/<run>/final/adapter)")
    merge.add_argument("--out", required=True, help="output directory")
    merge.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    merge.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (off by default)")
    merge.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"),
                       help="precision of the merged weights (a float base: train on 4bit, merge into fp32/bf16)")

    gen = commands.add_parser(
        "generate", help="sample continuations with the training sampling controls",
        description="One sampled continuation per prompt; generation.* overrides (or --config) set "
                    "max_new_tokens, min_new_tokens, temperature, top_k, top_p, repetition_penalty.")
    gen.add_argument("--model", required=True, help="model name or path (base or merged)")
    gen.add_argument("--adapter", help="PEFT adapter directory to apply")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="one prompt")
    source.add_argument("--prompts", help="file: one prompt per line, or JSONL with a 'prompt' field")
    gen.add_argument("--config", help="YAML configuration file (its generation and model sections)")
    gen.add_argument("--out", help="write JSONL rows {prompt, response} here instead of printing")
    gen.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    gen.add_argument("--seed", type=int, default=0)

    merge.set_defaults(overrides=[])
    gen.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")

    config = commands.add_parser(
        "config", help="print the configuration's JSON Schema, or a validated, fully defaulted config",
        description="--schema: the JSON Schema of the YAML files (point your editor's YAML support at it). "
                    "--show FILE [key=value ...]: the configuration a run would use, every default filled in.")
    shown = config.add_mutually_exclusive_group(required=True)
    shown.add_argument("--schema", action="store_true", help="print the JSON Schema")
    shown.add_argument("--show", metavar="FILE", help="print FILE validated, with the overrides and defaults")
    config.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides (with --show)")


def toxicity_overrides(args: argparse.Namespace) -> list[str]:
    fields = {"model": "model.name_or_path", "dataset": "data.source", "data_path": "data.path",
              "split": "evaluation.split", "samples": "evaluation.samples_per_prompt",
              "max_prompts": "evaluation.max_prompts", "classifier": "evaluation.classifier",
              "actors": ("evaluation.generator_actors", "evaluation.scorer_actors")}
    out = []
    for arg, keys in fields.items():
        value = getattr(args, arg)
        if value is not None:
            out += [f"{k}={value}" for k in ((keys,) if isinstance(keys, str) else keys)]
    return out


def print_metrics(results: dict[str, dict]) -> None:
    names = list(results)
    print(f"{'metric':32s}" + "".join(f"{n:>14s}" for n in names))
    for key in next(iter(results.values())):
        print(f"{key:32s}" + "".join(f"{results[n].get(key, float('nan')):14.4f}" for n in names))


def run_toxicity(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, toxicity_overrides(args) + args.overrides)
    staging = claim_out(args.out, args.overwrite)
    from rlaf_ray.evaluation.meter import measure
    from rlaf_ray.preflight import prepare

    cfg = prepare(cfg, (cfg.evaluation.split,), evaluation=True)
    init_ray(args.address)
    adapter = str(local_copy(args.adapter, cfg.run.cache_dir)) if args.adapter else None
    result = measure(cfg, adapter, staging)
    out = publish(staging, args.out)
    print_metrics({"model": result.metrics})
    print(f"[rlaf] toxicity: {out / 'metrics.json'}, samples in {out / Path(result.samples_path).name}")


def run_report(args: argparse.Namespace) -> None:
    storage = open_run(args.run)
    run_dir = storage.local
    if not (run_dir / "final" / "adapter" / "adapter_config.json").is_file():
        raise ConfigError([f"--run {args.run!r}: no final/adapter in it; expected a finished train run"])
    cfg = load_config(run_dir / "config.yaml", args.overrides)
    from rlaf_ray.evaluation.report import write_report
    from rlaf_ray.preflight import prepare

    cfg = prepare(cfg, (cfg.evaluation.split,), evaluation=True)
    init_ray()
    print_metrics(write_report(cfg, run_dir))
    storage.push("report")
    print(f"[rlaf] report: {storage.where('report')}")


def run_compare(args: argparse.Namespace) -> None:
    from rlaf_ray.evaluation.compare import compare, comparison_plan

    staging = claim_out(args.out, args.overwrite)
    cfg, models = comparison_plan([local_copy(r) for r in args.runs if r != "base"], args.overrides)
    init_ray()
    rows = compare(cfg, models, staging)
    out = publish(staging, args.out)
    print_metrics({row["model"]: {k: v for k, v in row.items() if k != "model"} for row in rows})
    print(f"[rlaf] comparison: {out / 'comparison.md'}, {out / 'comparison.png'}")


def run_merge(args: argparse.Namespace) -> None:
    from rlaf_ray.config import ModelSettings
    from rlaf_ray.export import adapter_base, check_adapter, merge
    from rlaf_ray.models.policy import auto_class
    from rlaf_ray.models.source import check_model_source
    from rlaf_ray.models.tiny import resolve_model

    staging = claim_out(args.out, args.overwrite)
    adapter = str(local_copy(args.adapter, args.cache_dir))
    check_adapter(adapter)  # before a tiny:<name> base is built (tens of seconds on a fresh cache)
    base = resolve_model(args.base or adapter_base(adapter), str(Path(args.cache_dir).expanduser()))
    check_model_source("--base", base)
    model = ModelSettings(name_or_path=base, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    out = publish(merge(model, adapter, staging), args.out)
    print(f"[rlaf] merged model in {out} ({auto_class(model).__name__}.from_pretrained({str(out)!r}))")


def run_generate(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, [f"model.name_or_path={args.model}", *args.overrides])
    from rlaf_ray.export import generate, read_prompts
    from rlaf_ray.models.source import check_model_source

    check_model_source("--model", cfg.model.name_or_path)
    staging = claim_out(args.out, args.overwrite) if args.out else None
    prompts = [args.prompt] if args.prompt is not None else read_prompts(args.prompts)
    responses = generate(cfg.model, args.adapter, prompts, cfg.generation, seed=args.seed)
    if staging is not None:
        staging.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in zip(prompts, responses)))
        publish(staging, args.out)
        print(f"[rlaf] {len(responses)} responses in {args.out}")
    else:
        for p, r in zip(prompts, responses):
            print(f"{p}{r}\n---")


OVERWRITE_HELP = "replace what --out holds (kept until the new output is complete)"


def where(cfg, run_dir: Path, relative: str) -> str:
    """A file of a finished run as a person finds it: at the URI when the run has one."""
    storage = cfg.run_storage
    return storage.where(relative) if storage.remote else str(run_dir / relative)


def fresh_run_name(cfg) -> str:
    """``<run.name>-<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``, ... if taken): a demo never continues
    an earlier one."""
    import time

    stem = f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = stem, 1
    while (Path(cfg.run.output_dir).expanduser() / name).exists():
        n += 1
        name = f"{stem}-{n}"
    return name


def run_demo(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, ["evaluation.after_train=true", *args.overrides])
    if not any(o.strip().startswith("run.name=") for o in args.overrides):  # given: the resume rules apply
        cfg = cfg.replace(run={"name": fresh_run_name(cfg)})
    print(f"[rlaf] demo: writing to {Path(cfg.run_dir).expanduser().resolve()}", flush=True)
    from rlaf_ray.train import train

    run_dir = train(cfg, address=args.address)
    results = {name: json.loads((run_dir / "report" / name / "metrics.json").read_text())
               for name in ("base", "trained")}
    print_metrics(results)
    print(f"[rlaf] demo: {demo_line(json.loads((run_dir / 'report' / 'summary.json').read_text()))}; "
          f"report in {run_dir / 'report'}")


def demo_line(summary: dict) -> str:
    """Base -> trained for each headline measure the run has, and the KL to the base."""
    b, t = summary["base"], summary["trained"]
    parts = []
    for key, label, fmt in (("toxic_rate", "toxic", ".1%"), ("grammatical_rate", "grammatical", ".1%"),
                            ("expected_max_toxicity", "expected max toxicity", ".3f"),
                            ("distinct_2", "distinct-2", ".3f"), ("perplexity", "perplexity", ".2f")):
        if b.get(key) is not None:
            parts.append(f"{label} {b[key]:{fmt}} -> {t[key]:{fmt}}")
    return ", ".join(parts) + f", KL to base {summary['kl']:.2f}"


def run_config(args: argparse.Namespace) -> None:
    if args.schema:
        print(json.dumps(json_schema(), indent=1))
    else:
        print(dump_yaml(load_config(args.show, args.overrides)), end="")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # read here and, through the environment, by local Ray workers
    quiet_process()
    if args.command not in ("merge", "generate"):  # the other commands load their models in Ray actors
        skip_bitsandbytes()
    try:
        if args.command == "config":
            run_config(args)
        elif args.command == "train":
            cfg = load_config(args.config, args.overrides)  # before the heavy imports: errors at once
            from rlaf_ray.train import train

            run_dir = train(cfg, address=args.address, resume=args.resume)
            print(f"[rlaf] done: adapter in {where(cfg, run_dir, 'final/adapter')}")
        elif args.command == "tune":
            cfg = load_config(args.config, args.overrides)
            from rlaf_ray.tune import tune_search

            exp = tune_search(cfg, address=args.address, resume=args.resume)
            print(f"[rlaf] done: {exp / 'trials.md'}")
        elif args.command == "sft":
            cfg = load_config(args.config, args.overrides)
            from rlaf_ray.sft import sft

            run_dir = sft(cfg, address=args.address, resume=args.resume)
            print(f"[rlaf] done: adapter in {where(cfg, run_dir, 'final/adapter')}")
        elif args.command == "merge":
            run_merge(args)
        elif args.command == "generate":
            run_generate(args)
        elif args.command == "compare":
            run_compare(args)
        elif args.command == "toxicity":
            run_toxicity(args)
        elif args.command == "report":
            run_report(args)
        elif args.command == "demo":
            run_demo(args)
    except ConfigError as err:
        for line in err.problems:
            print(f"rlaf-ray: error: {line}", file=sys.stderr)
        return 2
    except RunInterrupted as stopped:
        print(f"[rlaf] {stopped}, checkpoint written; the same command resumes it:\n  {same_command(argv)}",
              file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a training run
        print(f"\n[rlaf] interrupted; a run resumes from its latest checkpoint with the same command:\n"
              f"  {same_command(argv)}", file=sys.stderr)
        return 130
    return 0


def same_command(argv: list[str] | None) -> str:
    return shlex.join(["rlaf-ray", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
