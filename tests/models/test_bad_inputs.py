"""The catalogue of bad inputs: each one, given to the CLI, ends in exactly one error line that
names the field, file or value and what was expected, exit status 2, no traceback, and no Ray.

``main`` runs in this process (it is what the ``rlaf-ray`` script calls) so that the catalogue
costs one import of the libraries, not one per case. Ray's start is a tripwire: a bad input that
got as far as starting Ray was not caught before the actors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO

CONFIG = str(REPO / "jobs" / "configs" / "offline_tiny.yaml")
TRAIN = ["train", "--config", CONFIG]

# (id, command line, what the one error line says). {tmp}: this test's files (see ``files``).
CATALOGUE = [
    # the configuration file and the override syntax
    ("missing-config", ["train", "--config", "{tmp}/none.yaml"], "config file '{tmp}/none.yaml': not found"),
    ("config-not-utf8", ["train", "--config", "{tmp}/latin1.yaml"], "not UTF-8 text (byte 0xe9"),
    ("config-not-yaml", ["train", "--config", "{tmp}/broken.yaml"], "not valid YAML at line 3, column 1: expected ',' or ']'"),
    ("config-a-list", ["train", "--config", "{tmp}/list.yaml"], "expected a mapping at the top level"),
    ("override-without-value", [*TRAIN, "ppo.batch_size"], "override 'ppo.batch_size': expected key.sub=value"),
    ("config-show-missing", ["config", "--show", "{tmp}/none.yaml"], "config file '{tmp}/none.yaml': not found"),
    # fields: unknown, wrong type, out of range, not a choice
    ("typo", [*TRAIN, "ppo.learnig_rate=1"], "ppo.learnig_rate: unknown key; did you mean learning_rate?"),
    ("unknown-section", [*TRAIN, "foo.bar=1"], "foo: unknown key; valid keys in the top level"),
    ("not-an-integer", [*TRAIN, "ppo.batch_size=abc"], "ppo.batch_size: expected an integer, got 'abc'"),
    ("not-a-bool", [*TRAIN, "model.trust_remote_code=maybe"], "model.trust_remote_code: expected true or false"),
    ("out-of-range", [*TRAIN, "ppo.cliprange=1.5"], "ppo.cliprange: 1.5 is out of range; allowed (0.0, 1.0]"),
    ("negative-failures", [*TRAIN, "run.max_failures=-1"], "run.max_failures: -1 is out of range"),
    ("no-learners", [*TRAIN, "resources.learner.num_workers=0"], "resources.learner.num_workers: 0 is out of range"),
    ("unknown-estimator", [*TRAIN, "ppo.estimator=ppo2"], "ppo.estimator: expected one of 'gae' | 'rloo' | 'grpo'"),
    ("unknown-dtype", [*TRAIN, "model.dtype=fp8"], "model.dtype: expected one of 'fp32'"),
    ("run-name-dotdot", [*TRAIN, "run.name=.."], "run.name: '..' must be one directory name"),
    ("run-name-path", [*TRAIN, "run.name=a/b"], "run.name: 'a/b' must be one directory name"),
    # fields that do not fit together
    ("batch-does-not-divide", [*TRAIN, "ppo.batch_size=30"], "ppo.batch_size: 15 responses per learner (30/2)"),
    ("rloo-one-sample", [*TRAIN, "ppo.estimator=rloo"], "ppo.samples_per_prompt: rloo compares responses"),
    ("warmup-without-critic", [*TRAIN, "ppo.estimator=rloo", "ppo.samples_per_prompt=4", "ppo.critic_warmup=2"],
     "ppo.critic_warmup: rloo has no critic to warm up"),
    ("min-over-max-tokens", [*TRAIN, "generation.min_new_tokens=30"], "generation.min_new_tokens: 30 exceeds"),
    ("length-range-inverted", [*TRAIN, "generation.max_new_tokens=[16,8]"],
     "generation.max_new_tokens: expected an integer or [low, high] with low <= high"),
    ("k3-in-reward", [*TRAIN, "ppo.kl_estimator=k3"], "ppo.kl_estimator: 'k3' belongs in the loss"),
    ("empty-search-choice", ["tune", "--config", CONFIG, "tune.search_space={{lora.r: {{choice: []}}}}"],
     "tune.search_space.lora.r: empty choice list"),
    ("unknown-search-field", ["tune", "--config", CONFIG, "tune.search_space={{lora.rank: {{choice: [1]}}}}"],
     "tune.search_space.lora.rank: unknown config field; did you mean lora.r"),
    # models
    ("policy-not-there", [*TRAIN, "model.name_or_path=/no/such/model"],
     "model.name_or_path: '/no/such/model' is not a directory here, nor a hub model id"),
    ("policy-not-cached-offline", [*TRAIN, "model.name_or_path=nobody/no-such-model"],
     "model.name_or_path: 'nobody/no-such-model' is not in the local Hugging Face cache"),
    ("classifier-not-there", [*TRAIN, "reward.model_name_or_path=/no/such/classifier"],
     "reward.model_name_or_path: '/no/such/classifier' is not a directory here"),
    ("reward-label", [*TRAIN, "reward.label=notalabel"], "reward.label: 'notalabel' is not a label of"),
    ("meter-label", [*TRAIN, "evaluation.toxic_label=nope"], "evaluation.toxic_label: 'nope' is not a label of"),
    ("lora-target", [*TRAIN, "lora.target_modules=[nope]"], "lora.target_modules: 'nope' is not a linear layer"),
    ("context-too-long", [*TRAIN, "model.max_prompt_length=5000"],
     "model.max_prompt_length: 5000 prompt tokens + generation.max_new_tokens 24 exceed the 1024-token context"),
    ("init-adapter-not-there", [*TRAIN, "lora.init_from={tmp}/empty"], "lora.init_from: '{tmp}/empty' has no adapter_config.json"),
    ("eva-and-init-from", [*TRAIN, "lora.init=eva", "lora.init_from={tmp}/empty"],
     "lora.init: 'eva' initializes a new adapter, and init_from '{tmp}/empty' continues a saved one"),
    ("eva-seq2seq", [*TRAIN, "model.name_or_path=tiny:t5", "lora.init=eva", "lora.target_modules=[q,v]"],
     "lora.init: 'eva' needs a causal LM"),
    # the reward callable
    ("callable-module", [*TRAIN, "reward.callable=no_such_module:score"],
     "reward.callable: cannot import module 'no_such_module'"),
    ("callable-function", [*TRAIN, "reward.callable=tests.rewards:no_such_function"],
     "reward.callable: module 'tests.rewards' has no function 'no_such_function'"),
    ("callable-too-few-scores", [*TRAIN, "reward.callable=tests.rewards:one_score_short"],
     "reward.callable: 'tests.rewards:one_score_short' returned 1 score(s) for 2 responses"),
    # data
    ("data-missing", [*TRAIN, "data.path={tmp}/none.jsonl"], "data.path '{tmp}/none.jsonl': file not found"),
    ("data-empty", [*TRAIN, "data.path={tmp}/empty/{{split}}.jsonl"], "data.path '{tmp}/empty/train.jsonl': file is empty"),
    ("data-column", [*TRAIN, "data.path={tmp}/nocolumn/{{split}}.jsonl"], "missing column 'text'; columns present: other"),
    ("data-not-json", [*TRAIN, "data.path={tmp}/notjson/{{split}}.jsonl"], "data.path '{tmp}/notjson/train.jsonl': line 2 is not JSON"),
    ("sft-reference-column", ["sft", "--config", CONFIG, "data.reference_column=nope"], "missing column 'nope'"),
    # outputs and other commands
    ("output-unwritable", [*TRAIN, "run.output_dir=file:///proc/rlaf-nowhere"],
     "run.output_dir: cannot write to 'file:///proc/rlaf-nowhere/offline-tiny'"),
    ("toxicity-model", ["toxicity", "--config", CONFIG, "--model", "/no/model"],
     "model.name_or_path: '/no/model' is not a directory here"),
    ("toxicity-out-taken", ["toxicity", "--config", CONFIG, "--out", "{tmp}/taken"], "--out '{tmp}/taken': already exists"),
    ("merge-adapter", ["merge", "--base", "tiny:llama", "--adapter", "/no/adapter", "--out", "{tmp}/merged"],
     "--adapter '/no/adapter': no adapter_config.json in it"),
    ("merge-out-taken", ["merge", "--adapter", "{tmp}/empty", "--out", "{tmp}/taken"], "--out '{tmp}/taken': already exists"),
    ("generate-model", ["generate", "--model", "/no/model", "--prompt", "hi"], "--model: '/no/model' is not a directory"),
    ("generate-prompts", ["generate", "--model", "{policy}", "--prompts", "{tmp}/none.txt"],
     "--prompts '{tmp}/none.txt': file not found"),
    ("generate-out-taken", ["generate", "--model", "{policy}", "--prompt", "hi", "--out", "{tmp}/taken"],
     "--out '{tmp}/taken': already exists"),
    ("report-not-a-run", ["report", "--run", "{tmp}/empty"], "--run '{tmp}/empty': no final/adapter in it"),
    ("compare-not-a-run", ["compare", "--runs", "{tmp}/empty"], "--runs '{tmp}/empty': no final/adapter in it"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("bad-inputs")
    (tmp / "latin1.yaml").write_bytes("run:\n  name: café\n".encode("latin-1"))
    (tmp / "broken.yaml").write_text("ppo:\n  batch_size: [8\n")
    (tmp / "list.yaml").write_text("- ppo\n- run\n")
    (tmp / "empty").mkdir()
    (tmp / "taken").mkdir()
    (tmp / "taken" / "keep.txt").write_text("not to be overwritten")
    for split in ("train", "test"):
        for name, text in (("empty", ""), ("nocolumn", '{"other": "x"}\n'),
                           ("notjson", json.dumps({"text": "Hi there.", "reply": "Hello."}) + "\n{not json\n")):
            (tmp / name).mkdir(exist_ok=True)
            (tmp / name / f"{split}.jsonl").write_text(text)
    return str(tmp)


@pytest.fixture
def no_ray_start(monkeypatch):
    """Starting Ray fails the case: every bad input must be refused before."""
    import rlaf_ray.cli
    import rlaf_ray.console
    import rlaf_ray.sft
    import rlaf_ray.train

    def tripwire(*args, **kwargs):
        raise AssertionError("Ray was about to start: the bad input was not caught before the actors")

    for module in (rlaf_ray.cli, rlaf_ray.console, rlaf_ray.sft, rlaf_ray.train):
        monkeypatch.setattr(module, "init_ray", tripwire)


def test_the_catalogue_has_at_least_thirty_inputs():
    assert len(CATALOGUE) >= 30 and len({case[0] for case in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("argv,expected", [case[1:] for case in CATALOGUE], ids=[case[0] for case in CATALOGUE])
def test_bad_input_gives_one_line(argv, expected, files, policy_path, tiny_cache, no_ray_start, capsys):
    from rlaf_ray.cli import main

    fill = {"tmp": files, "policy": policy_path}
    argv = [a.format(**fill) for a in argv]
    if argv[0] in ("train", "sft", "tune", "toxicity"):
        argv += [f"run.cache_dir={tiny_cache}", *([] if any(a.startswith("run.output_dir=") for a in argv)
                                                 else [f"run.output_dir={files}/results"])]
    status = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("rlaf-ray: error: ")]
    assert status == 2 and len(errors) == 1, err[-3000:]
    assert expected.format(**fill) in errors[0], errors[0]
    assert "Traceback" not in err
    assert (Path(files) / "taken" / "keep.txt").read_text() == "not to be overwritten"
