"""Where a model name points: a local directory, or a hub id this machine can load."""

from __future__ import annotations

import re
from pathlib import Path

from rlaf_ray.config import ConfigError

# A hub model id: "<name>" or "<org>/<name>" (letters, digits, "-", "_", ".").
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def check_model_source(field: str, name: str) -> None:
    """``name`` can be loaded from here: a local directory that exists, or a hub model id that is
    well formed (and, with the hub offline, already in the local cache). One line naming the
    field, instead of the hub client's traceback from inside ``from_pretrained``."""
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(name).expanduser().is_dir():
        return
    if name.startswith(("/", ".", "~")) or not HUB_ID.fullmatch(name):
        raise ConfigError([f"{field}: {name!r} is not a directory here, nor a hub model id (<org>/<name>)"])
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise ConfigError([f"{field}: {name!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
                           f"and the hub is offline (HF_HUB_OFFLINE=1): download it first, or give a directory"])
