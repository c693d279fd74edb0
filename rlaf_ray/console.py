"""A console a person can read: one line per iteration, and the rest only with ``--verbose``.

Quiet by default: Ray Data's progress output, Ray's INFO logs, weight-loading bars and library
warnings that a user cannot act on (``FutureWarning``s, bitsandbytes' note that an optional CPU
kernel is missing) are off, in this process and in every Ray worker (a worker process setup
hook). ``rlaf-ray --verbose`` (or ``RLAF_VERBOSE=1``) restores everything.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings

VERBOSE_ENV = "RLAF_VERBOSE"
# Ray's worker process setup hook of every job rlaf_ray starts: bitsandbytes only where needed,
# then quiet_process (which does nothing when verbose).
WORKER_SETUP_HOOK = "rlaf_ray.worker_setup.setup_worker"
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bars too
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "RAY_DATA_LOG_LEVEL": "WARNING",  # "Dataset ... execution finished", "Progress bars disabled"
}
QUIET_LOGGERS = ("bitsandbytes", "transformers", "datasets", "peft", "accelerate", "torch.distributed",
                 # "Token authentication is enabled": the default, nothing to do
                 "ray._private.authentication.authentication_token_setup")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


def quiet_process() -> None:
    """Silence what users cannot act on in this process (also Ray's worker process setup hook)."""
    if verbose():
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "ray" in sys.modules:  # a Ray worker; the driver calls it from init_ray (ray is slow to import)
        _quiet_ray_library_lines()
    if "transformers" in sys.modules:  # imported before the environment above was set
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _quiet_ray_library_lines() -> None:
    import ray

    # Ray Train 2.60 logs "Reporting training result ..." (every report, all metrics) through a
    # logger named after its source file, which Train's own log level does not reach.
    context = os.path.join(os.path.dirname(ray.__file__), "train", "v2", "_internal", "execution", "context.py")
    logging.getLogger(context).setLevel(logging.WARNING)
    # Said once per process: that the progress bars are off, which is what we asked for.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _job_sets(key: str) -> bool:
    """Whether ``ray job submit`` gave this driver a runtime env with ``key`` (Ray refuses to merge
    a driver's runtime env that sets the same key)."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    job = json.loads(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR, "{}"))
    return key in (job.get("runtime_env") or {})


def train_logging():
    """Ray Train's own log level: its INFO lines (worker group start, every ``report``) only when
    verbose."""
    from ray.train import LoggingConfig

    return LoggingConfig(log_level="INFO" if verbose() else "WARNING")


def init_ray(address: str | None = None) -> None:
    """``ray.init`` as every command starts Ray: quiet workers and Ray Data unless verbose."""
    import ray

    if ray.is_initialized():
        return
    hook = "worker_process_setup_hook"
    runtime_env = {} if _job_sets(hook) else {hook: WORKER_SETUP_HOOK}
    if verbose():
        ray.init(address=address, runtime_env=runtime_env)
        return
    quiet_process()  # ray is imported now: its own lines too
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    ray.init(address=address, runtime_env=runtime_env, logging_config=ray.LoggingConfig(log_level="WARNING"))
