"""OGBench: the single-task env adapter, the oracle generator, the relabelling and the dataset recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ogbench")

from qtransformer.data import EpisodeStore  # noqa: E402
from qtransformer.envs import make_env  # noqa: E402
from qtransformer.envs.ogbench import TaskJudge, generate_episode, make_collection_env, singletask_id  # noqa: E402
from qtransformer.envs.ogbench_dataset import (  # noqa: E402
    RawRecipe,
    generate_raw,
    load_block,
    make_ogbench_dataset,
    raw_successes,
    relabel_episode,
)

QPOS_OBJ, CUBE_LEN = 14, 7  # OGBench's qpos layout: the arm and gripper, then 7 entries (xyz, quat) per cube


def _raw(env: str, length: int, seed: int = 3) -> dict:
    return generate_episode(env, "play", seed, episode_length=length)


def _put_at_goal(env: str, judge: TaskJudge, raw: dict, steps: list[int], partial: list[int] = ()) -> dict:
    """A constructed trajectory: at `steps` every subtask of the judge's task is solved; at `partial`
    only the first subtask is."""
    raw = {k: np.array(v, copy=True) for k, v in raw.items() if k != "retries"}
    u = judge.u
    for t, full in [(t, True) for t in steps] + [(t, False) for t in partial]:
        if env.startswith("cube") or env == "scene":
            for i in range(u._num_cubes if full else 1):
                raw["qpos"][t, QPOS_OBJ + i * CUBE_LEN: QPOS_OBJ + i * CUBE_LEN + 3] = u._data.mocap_pos[u._cube_target_mocap_ids[i]]
        if "button_states" in raw:
            target = u._target_button_states
            raw["button_states"][t] = target if full else np.where(np.arange(len(target)) == 0, target, 1 - target)
            if env == "scene" and not full:
                raw["button_states"][t] = 1 - target  # wrong buttons: the cube is the only subtask solved
        if env == "scene" and full:
            drawer = QPOS_OBJ + u._num_cubes * CUBE_LEN + u._num_buttons
            raw["qpos"][t, drawer] = u._target_drawer_pos
            raw["qpos"][t, drawer + 1] = u._target_window_pos
    return raw


@pytest.mark.parametrize("env", ["cube-single", "cube-double", "puzzle-3x3", "scene"])
def test_relabelling_agrees_with_ogbench_relabel_utils(env):
    import gymnasium as gym
    from ogbench.relabel_utils import relabel_dataset

    judge = TaskJudge(env, 2)
    raw = _put_at_goal(env, judge, _raw(env, 12), steps=[3, 4, 9], partial=[6])
    ours = raw_successes(judge, raw)
    theirs = {"qpos": raw["qpos"].astype(np.float32), **({"button_states": raw["button_states"]} if "button_states" in raw else {})}
    relabel_dataset(env, gym.make(singletask_id(env, 2)), theirs)
    np.testing.assert_array_equal(ours.sum(1) - ours.shape[1], theirs["rewards"])  # subtasks solved - subtasks
    np.testing.assert_array_equal(1.0 - ours.all(1), theirs["masks"])
    assert ours.all(1)[[3, 4, 9]].all() and ours[6].any()
    assert ours.shape[1] == 1 or not ours.all(1)[6]  # several subtasks: one solved is not success
    pieces, solved = relabel_episode(raw, ours, "ogbench-play")
    np.testing.assert_array_equal(solved, theirs["rewards"][:11] + ours.shape[1])
    rewards = np.concatenate([p["rewards"] for p in pieces])
    np.testing.assert_array_equal(rewards, 1.0 - theirs["masks"][:11])  # our sparse reward: 1 where OGBench's mask is 0
    judge.close()


def test_generator_rewards_and_terminals_against_the_environments_own_check():
    """Every stored step's reward and terminal is what the OGBench single-task environment's step()
    reports from that state (success, terminated); pieces end at each success, the last in a timeout."""
    env = "cube-single"
    judge = TaskJudge(env, 1)
    raw = _put_at_goal(env, judge, _raw(env, 25), steps=[5, 6, 15])
    pieces, solved = relabel_episode(raw, raw_successes(judge, raw), "ogbench-play")
    assert [len(p["rewards"]) for p in pieces] == [6, 1, 9, 8]
    assert [bool(p["terminals"][-1]) for p in pieces] == [True, True, True, False] and pieces[-1]["timeouts"][-1]
    check = make_env(f"ogbench:{singletask_id(env, 1)}").unwrapped  # the environment, pre-success timing
    check.reset(seed=0)
    t = 0
    for p in pieces:
        assert not p["terminals"][:-1].any() and not p["timeouts"][:-1].any()
        for k in range(len(p["rewards"])):
            check.set_state(raw["qpos"][t], raw["qvel"][t])
            check.pre_step(), check.post_step()  # the environment's own success update, as after a step into the state
            _, reward, terminated, _, info = check.step(raw["actions"][t])
            assert bool(p["rewards"][k]) == info["success"] == terminated == bool(p["terminals"][k])
            assert solved[t] == reward + 1  # OGBench's reward: subtasks solved - subtasks
            np.testing.assert_array_equal(p["observations"][k], raw["observations"][t])
            np.testing.assert_array_equal(p["next_observations"][k], raw["observations"][t + 1])
            t += 1
    assert t == 24
    judge.close()


def test_generated_episodes_are_seeded_and_shaped():
    env = make_collection_env("cube-double", 20)
    a = generate_episode("cube-double", "noisy", 11, env=env, episode_length=20)
    b = generate_episode("cube-double", "noisy", 11, episode_length=20)  # a fresh environment
    c = generate_episode("cube-double", "noisy", 12, env=env, episode_length=20)
    for k in ("observations", "actions", "qpos", "qvel"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["actions"], c["actions"])
    assert a["observations"].shape == (20, 37) and a["actions"].shape == (19, 5) and np.abs(a["actions"]).max() <= 1.0


def test_workers_make_the_same_dataset_and_the_cache_is_reused(tmp_path, capsys):
    from qtransformer.cli import main

    kw = dict(env="puzzle-3x3", dataset="noisy", task=1, episodes=3, seed=5, episode_length=15, progress=False)
    one = make_ogbench_dataset(out=tmp_path / "one", workers=1, cache=tmp_path / "c1", **kw)
    two = make_ogbench_dataset(out=tmp_path / "two", workers=2, cache=tmp_path / "c2", **kw)
    a, b = EpisodeStore.open(tmp_path / "one").to_dataset(), EpisodeStore.open(tmp_path / "two").to_dataset()
    for k in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts", "episode_starts"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    sa, sb = np.load(tmp_path / "one" / "ogbench" / "steps.npz"), np.load(tmp_path / "two" / "ogbench" / "steps.npz")
    for k in ("subtasks_solved", "raw_episode", "raw_step"):
        np.testing.assert_array_equal(sa[k], sb[k])
    assert one["transitions"] == two["transitions"] == a.num_steps == 3 * 14 and len(sa["subtasks_solved"]) == a.num_steps
    assert a.env_id == "ogbench:puzzle-3x3-singletask-task1-v0" and a.action_dim == 5 and a.obs_dim == 55
    # the cache: a second run (another task, through the command line) generates nothing
    assert main(["make-dataset", "ogbench", "--env", "puzzle-3x3", "--dataset", "noisy", "--task", "2", "--episodes", "3", "--seed", "5",
                 "--episode-length", "15", "--cache", str(tmp_path / "c1"), "--out", str(tmp_path / "t2")]) == 0
    out = capsys.readouterr().out
    assert "| generation | cached |" in out and "ogbench:puzzle-3x3-singletask-task2-v0" in out
    assert json.loads((tmp_path / "t2" / "ogbench" / "recipe.json").read_text())["generated_steps"] == 0
    # a cache made for another recipe is refused
    with pytest.raises(ValueError, match="raw-episode cache"):
        generate_raw(RawRecipe("puzzle-3x3", "play", 5, 15), 3, tmp_path / "c1", progress=False)
    block = load_block(sorted((tmp_path / "c1").glob("episodes_*.npz"))[0])
    assert block["observations"].shape == (3, 15, 55) and block["button_states"].shape == (3, 15, 9)


def test_eval_env_spaces_success_and_sparse_reward():
    env = make_env("ogbench:cube-single-singletask-task1-v0")
    assert env.observation_space.shape == (28,) and env.action_space.shape == (5,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (28,) and info["success"] is False
    # put the cube on its goal: the next step reports success, reward 1 and terminates (pre-success timing)
    u = env.unwrapped
    qpos = u._data.qpos.copy()
    qpos[QPOS_OBJ:QPOS_OBJ + 3] = u._data.mocap_pos[u._cube_target_mocap_ids[0]]
    u.set_state(qpos, u._data.qvel.copy())
    u.pre_step(), u.post_step()
    _, reward, terminated, truncated, info = env.step(np.zeros(5))
    assert info["success"] and reward == 1.0 and terminated and not truncated and info["subtasks_solved"] == info["num_subtasks"] == 1
    with pytest.raises(ValueError, match="single-task"):
        make_env("ogbench:cube-single-v0")
    with pytest.raises(ValueError, match="registers no environment"):
        make_env("ogbench:cube-single-singletask-task9-v0")
