"""Which adapter the search summary names for a trial: the one whose metrics it shows."""

from __future__ import annotations

from rlaf_ray.storage import RunStorage
from rlaf_ray.tune.summary import _adapter


def make(trial_dir, *names):
    for name in names:
        (trial_dir / name).mkdir(parents=True)


def test_a_stopped_trial_names_its_last_judged_checkpoint_not_a_later_one(tmp_path):
    store = RunStorage(str(tmp_path / "search"))
    trial = store.local / "t1"
    # Stopped after reporting iteration 2; its learner finished iteration 3 before it was killed;
    # a staging directory and an emptied checkpoint are never named.
    make(trial, "checkpoint_000001/adapter", "checkpoint_000002/adapter", "checkpoint_000003/adapter",
         "checkpoint_tmp/adapter", "checkpoint_000004")
    assert _adapter(store, "t1", iterations=2) == str(trial / "checkpoint_000002" / "adapter")
    assert _adapter(store, "t1", iterations=3) == str(trial / "checkpoint_000003" / "adapter")
    assert _adapter(store, "t1", iterations=0) == ""  # never reported: nothing was judged


def test_a_finished_trial_names_its_final_adapter(tmp_path):
    store = RunStorage(str(tmp_path / "search"))
    make(store.local / "t2", "checkpoint_000004/adapter", "final/adapter")
    assert _adapter(store, "t2", iterations=4) == str(store.local / "t2" / "final" / "adapter")
