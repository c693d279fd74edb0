"""A model that cannot be loaded is one line naming the field, before anything loads it."""

import pytest

from rlaf_ray.config import ConfigError
from rlaf_ray.models.source import check_model_source


def test_an_existing_directory_passes(tmp_path):
    check_model_source("model.name_or_path", str(tmp_path))


@pytest.mark.parametrize("name", ["/no/such/model", "./missing", "~/no-such-model", "a/b/c", "bad name"])
def test_a_missing_directory_or_malformed_id_is_named(name):
    with pytest.raises(ConfigError) as err:
        check_model_source("model.name_or_path", name)
    assert str(err.value) == f"model.name_or_path: {name!r} is not a directory here, nor a hub model id (<org>/<name>)"


def test_a_hub_id_missing_from_the_cache_while_offline_is_named(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the tests' environment sets it too
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ConfigError) as err:
        check_model_source("--base", "no-such-org/no-such-model")
    assert str(err.value).startswith("--base: 'no-such-org/no-such-model' is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE=1" in str(err.value)
