"""Typed run configuration on pydantic: YAML + ``key.sub=value`` overrides + validation.

Everything a run needs is one :class:`RLAFConfig`, a section per concern (``model``, ``lora``,
``generation``, ``reward``, ``data``, ``ppo``, ``evaluation``, ``sft``, ``resources``, ``run``,
``tune``). Each field carries its type, bounds and description; unknown keys are errors with a
"did you mean". All problems are raised together as one :class:`ConfigError`, one line per
problem naming the dotted field, before any Ray actor starts. This package imports only pydantic
and PyYAML, so the command line validates before loading torch, transformers or Ray.
"""

from rlaf_ray.config.data import (
    LOCAL_DATA_SUFFIXES,
    SPLITS,
    DataSettings,
    is_local_path,
)
from rlaf_ray.config.errors import ConfigError, check_value
from rlaf_ray.config.evaluation import EvaluationSettings
from rlaf_ray.config.fields import Number, leaf_fields, numeric_kind, type_name
from rlaf_ray.config.loading import (
    dump_yaml,
    json_schema,
    load_config,
    merge,
    parse_overrides,
    read_yaml,
)
from rlaf_ray.config.policy import (
    QUANTIZED_DTYPES,
    TINY_PREFIX,
    GenerationSettings,
    LoraSettings,
    ModelSettings,
    RewardSettings,
)
from rlaf_ray.config.root import MODEL_FIELDS, RLAFConfig, from_dict, resolve_paths
from rlaf_ray.config.run import (
    ResourcesSettings,
    RoleResources,
    RunSettings,
    TuneSettings,
)
from rlaf_ray.config.training import PPOSettings, SFTSettings

__all__ = [
    "LOCAL_DATA_SUFFIXES", "MODEL_FIELDS", "Number", "QUANTIZED_DTYPES", "SPLITS", "TINY_PREFIX",
    "ConfigError", "DataSettings", "EvaluationSettings", "GenerationSettings", "LoraSettings",
    "ModelSettings", "PPOSettings", "RLAFConfig", "ResourcesSettings", "RewardSettings",
    "RoleResources", "RunSettings", "SFTSettings", "TuneSettings",
    "check_value", "dump_yaml", "from_dict", "is_local_path", "json_schema", "leaf_fields",
    "load_config", "merge", "numeric_kind", "parse_overrides", "read_yaml", "resolve_paths", "type_name",
]
