"""What Ray Train's controller unpickles to start the learner group imports no model library."""

from __future__ import annotations

import subprocess
import sys

from ray import cloudpickle

from rlaf_ray.roles.learner_entry import learner_entry
from tests.conftest import REPO


def test_unpickling_the_learner_function_imports_no_model_library(tmp_path):
    pickled = tmp_path / "entry.pkl"
    pickled.write_bytes(cloudpickle.dumps(learner_entry))
    probe = ("import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read()); "
             "print(sorted(m for m in ('torch', 'transformers', 'peft', 'bitsandbytes', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, str(pickled)], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout
