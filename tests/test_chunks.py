"""Action chunks (--algo.action-chunk h): the chunked transitions, the wrapper that runs a chunk, and a
chunked policy trained, evaluated and refused where it cannot go (collect, finetune)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from test_sampler import make_ds

from qtransformer.actions import ActionDiscretizer
from qtransformer.cli import main
from qtransformer.data import build_transitions
from qtransformer.data.returns import chunk_steps
from qtransformer.envs.chunks import ActionChunk
from qtransformer.policy import QTPolicy


def test_chunk_steps_by_hand():
    # episodes of 3 and 2 steps: chunks of 3 clip to their own episode's last step
    assert chunk_steps(np.array([0, 3, 5]), 3).tolist() == [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4]]
    assert chunk_steps(np.array([0, 3, 5]), 1).tolist() == [[0], [1], [2], [3], [4]]
    with pytest.raises(ValueError, match=">= 1"):
        chunk_steps(np.array([0, 3]), 0)


def test_chunked_transitions_by_hand():
    ds = make_ds()  # A: steps 0..2 terminal, rewards [0, 0, 1]; B: steps 3..5 timeout, rewards [0, 0.5, 0]
    disc = ActionDiscretizer([-1, -1] * 2, [1, 1] * 2, 4)
    tr = build_transitions(ds, disc, gamma=0.5, n_step=1, action_chunk=2)
    one = ActionDiscretizer([-1, -1], [1, 1], 4).encode(ds.actions)  # (6, 2) per-step bins
    # step t's chunk is (a_t, a_{t+1}), the last step of an episode repeated past its end
    expected = np.concatenate([one[[0, 1, 2, 3, 4, 5]], one[[1, 2, 2, 4, 5, 5]]], axis=1)
    np.testing.assert_array_equal(tr["bins"], expected)
    # a 2-step backup per chunk, gamma 0.5: A t0: 0 + .5*0 = 0; t1: 0 + .5*1 = .5; t2: 1 (1 step left)
    # B t3: 0 + .5*.5 = .25; t4: .5 + 0 = .5; t5: 0
    assert tr["reward"].tolist() == pytest.approx([0.0, 0.5, 1.0, 0.25, 0.5, 0.0])
    assert tr["discount"].tolist() == pytest.approx([0.25, 0.25, 0.5, 0.25, 0.25, 0.5])
    assert tr["next_index"].tolist() == [1, 2, 2, 4, 5, 5]
    assert tr["bootstrap"].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # A ends in a terminal, B in a timeout
    assert tr["mc_return"].tolist() == pytest.approx([0.25, 0.5, 1.0, 0.25, 0.5, 0.0])  # still per step
    # chunks of 2 with n_step 2 reach 4 steps ahead (clipped at the episode's end)
    tr4 = build_transitions(ds, disc, gamma=0.5, n_step=2, action_chunk=2)
    assert tr4["next_index"].tolist() == [2, 2, 2, 5, 5, 5]
    with pytest.raises(ValueError, match="need 4"):
        build_transitions(ds, ActionDiscretizer([-1, -1], [1, 1], 4), gamma=0.5, n_step=1, action_chunk=2)


class _Counter(gym.Env):
    """Position x on a line, action added; success and termination when x reaches 3; truncation at 10 steps."""

    observation_space = gym.spaces.Box(-100, 100, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, seed=None, options=None):
        self.x, self.t, self.actions = 0.0, 0, []
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.actions.append(float(action[0]))
        self.x += float(action[0])
        self.t += 1
        done = self.x >= 3
        return np.array([self.x], np.float32), float(done), done, self.t >= 10, {"success": done}


def test_action_chunk_runs_the_steps_in_order_and_stops_at_the_end():
    env = ActionChunk(_Counter(), 3)
    assert env.action_space.shape == (3,)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.5, -0.5]))
    assert env.unwrapped.actions == [1.0, 0.5, -0.5] and obs.tolist() == [1.0]
    assert (reward, terminated, truncated, info["success"], info["env_steps"]) == (0.0, False, False, False, 3)
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 1.0, 1.0]))  # x reaches 3 at the 2nd step
    assert env.unwrapped.actions[3:] == [1.0, 1.0] and obs.tolist() == [3.0]  # the 3rd action never runs
    assert (reward, terminated, info["success"], info["env_steps"]) == (1.0, True, True, 2)


def test_episode_lengths_count_environment_steps_under_chunks():
    from qtransformer.evaluate import run_episodes

    # 1 + 1 + 1 per decision: x reaches 3 at the 3rd environment step, inside the 1st chunk of 4
    (ep,) = run_episodes(lambda obs: np.ones((len(obs), 4)), "unused", [0], make=lambda _: ActionChunk(_Counter(), 4))
    assert ep["success"] and ep["length"] == 3
    (ep,) = run_episodes(lambda obs: np.full((len(obs), 2), 0.5), "unused", [0], make=lambda _: ActionChunk(_Counter(), 2))
    assert ep["success"] and ep["length"] == 6  # 3 decisions of 2 steps


def test_a_chunked_policy_trains_evaluates_and_is_refused_by_collect_and_finetune(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["make-dataset", "builtin", "--demos", "3", "--autonomous", "3", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "4",
                 "--algo.action-chunk", "2", "--eval-episodes", "2", "--eval-every", "0"]) == 0
    policy = QTPolicy.from_checkpoint(run)
    assert policy.action_chunk == 2 and policy.net.action_dim == 2 * 3  # PointReach3D: d = 3
    env = policy.make_env("qtransformer/PointReach3D-v0")
    assert isinstance(env, ActionChunk) and env.action_space.shape == (6,)
    obs, _ = env.reset(seed=0)
    action = policy.act(obs)
    assert action.shape == (6,)
    env.step(action)
    assert main(["eval", "--checkpoint", str(run), "--episodes", "2"]) == 0
    capsys.readouterr()
    assert main(["collect", "--checkpoint", str(run), "--into", str(data), "--episodes", "1"]) == 2
    assert "chunks of 2 steps" in capsys.readouterr().err
    assert main(["finetune", "--checkpoint", str(run), "--out", str(tmp_path / "ft"), "--env-steps", "10", "--no-progress"]) == 2
    assert "--algo.action-chunk 1" in capsys.readouterr().err
