"""Episode datasets (data/dataset.py): round trip on disk (data/store.py) and validation errors that name the field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qtransformer.data.dataset import DatasetError, EpisodeDataset
from qtransformer.data.store import EpisodeStore

OBS_DIM, D = 3, 2


def episode(length, end="terminal", success=False, source="demonstration", task=0, seed=0):
    rng = np.random.default_rng(seed)
    rewards = np.zeros(length, np.float32)
    if success:
        rewards[-1] = 1.0
    terminals = np.zeros(length, bool)
    timeouts = np.zeros(length, bool)
    if end == "terminal":
        terminals[-1] = True
    elif end == "timeout":
        timeouts[-1] = True
    obs = rng.standard_normal((length + 1, OBS_DIM)).astype(np.float32)
    return {
        "observations": obs[:-1],
        "next_observations": obs[1:],
        "actions": rng.uniform(-1, 1, (length, D)).astype(np.float32),
        "rewards": rewards,
        "terminals": terminals,
        "timeouts": timeouts,
        "source": source,
        "task": task,
    }


def make_ds(**kwargs):
    eps = [
        episode(3, "terminal", success=True, seed=0),
        episode(4, "timeout", source="autonomous", task=1, seed=1),
        episode(2, "terminal", success=True, source="autonomous", task=1, seed=2),
    ]
    return EpisodeDataset.from_episodes(eps, [-1, -1], [1, 1], task_names=["a", "b"], env_id="x/Y-v0", **kwargs)


def test_shape_facts():
    ds = make_ds()
    assert (ds.num_episodes, ds.num_steps, ds.obs_dim, ds.action_dim, ds.num_tasks) == (3, 9, OBS_DIM, D, 2)
    assert ds.episode_starts.tolist() == [0, 3, 7, 9]
    assert ds.step_task().tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert ds.episode_success().tolist() == [True, False, True]
    assert ds.success_by_source() == {"autonomous": (2, 0.5), "demonstration": (1, 1.0)}


def test_save_load_round_trip(tmp_path):
    ds = make_ds()
    path = tmp_path / "ds"
    EpisodeStore.create(path, ds)
    again = EpisodeStore.open(path).to_dataset()
    for name in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts", "episode_starts", "episode_task", "action_low", "action_high"):
        a, b = getattr(ds, name), getattr(again, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert again.episode_source == ds.episode_source
    assert again.task_names == ["a", "b"] and again.env_id == "x/Y-v0"
    assert again.source_path == str(path)
    # saving over an existing dataset replaces it and leaves no temporary folder behind
    ds2 = EpisodeDataset.from_episodes([episode(5, "timeout", seed=9)], [-1, -1], [1, 1])
    EpisodeStore.create(path, ds2)
    assert EpisodeStore.open(path).to_dataset().num_steps == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def fails(match, episodes, low=(-1, -1), high=(1, 1)):
    with pytest.raises(DatasetError, match=match):
        EpisodeDataset.from_episodes(episodes, list(low), list(high))


@pytest.mark.parametrize("field", ["observations", "next_observations", "actions", "rewards"])
def test_nan_is_rejected_naming_the_field(field):
    ep = episode(4, seed=3)
    ep[field] = ep[field].copy()
    ep[field][2] = np.nan
    fails(rf"episode 1, step 2, field '{field}'", [episode(3), ep])


def test_inf_is_rejected():
    ep = episode(4)
    ep["rewards"] = ep["rewards"].copy()
    ep["rewards"][0] = np.inf
    fails(r"field 'rewards'", [ep])


def test_actions_out_of_bounds_are_rejected_naming_the_field():
    ep = episode(4)
    ep["actions"] = ep["actions"].copy()
    ep["actions"][3, 1] = 1.5
    fails(r"step 3, field 'actions'.*outside", [ep])
    # a hair outside (float rounding) is accepted
    ep["actions"][3, 1] = 1.0 + 1e-7
    EpisodeDataset.from_episodes([ep], [-1, -1], [1, 1])


def test_last_step_neither_terminal_nor_timeout_is_rejected():
    fails(r"episode 1, field 'terminals'/'timeouts'", [episode(3), episode(3, end=None)])


def test_end_flag_before_the_last_step_is_rejected():
    ep = episode(4, "timeout")
    ep["terminals"] = ep["terminals"].copy()
    ep["terminals"][1] = True
    fails(r"step 1, field 'terminals'/'timeouts'", [ep])


@pytest.mark.parametrize("field", ["observations", "next_observations", "actions", "terminals", "timeouts"])
def test_mismatched_lengths_are_rejected_naming_the_field(field):
    ep = episode(4)
    ep[field] = ep[field][:-1]
    fails(rf"field '{field}' has 3 steps but 'rewards' has 4", [ep])


def test_bounds_of_wrong_size_are_rejected():
    fails(r"action_low", [episode(3)], low=(-1, -1, -1), high=(1, 1, 1))


def test_task_id_outside_task_names_is_rejected():
    with pytest.raises(DatasetError, match="episode_task"):
        EpisodeDataset.from_episodes([episode(3, task=2)], [-1, -1], [1, 1], task_names=["a", "b"])


def test_no_episodes_is_rejected():
    with pytest.raises(DatasetError):
        EpisodeDataset.from_episodes([], [-1], [1])


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="missing_ds"):
        EpisodeStore.open(tmp_path / "missing_ds").to_dataset()
    path = tmp_path / "ds"
    EpisodeStore.create(path, make_ds())
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = 42
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="format_version"):
        EpisodeStore.open(path).to_dataset()
    (path / "meta.json").write_text("{")
    with pytest.raises(DatasetError, match="meta.json"):
        EpisodeStore.open(path).to_dataset()
    (path / "meta.json").unlink()
    with pytest.raises(DatasetError, match="meta.json"):
        EpisodeStore.open(path).to_dataset()


def test_corrupted_arrays_are_rejected(tmp_path):
    path = tmp_path / "ds"
    EpisodeStore.create(path, make_ds())
    arrays = path / "chunks" / "000000" / "actions.npy"
    arrays.write_bytes(arrays.read_bytes()[:100])
    with pytest.raises(DatasetError, match="actions.npy"):
        EpisodeStore.open(path).to_dataset()
