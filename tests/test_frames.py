"""Frame history (--model.frames W): the sampler's windows, the environment wrapper, and training,
evaluation and collection with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qtransformer.actions import ActionDiscretizer
from qtransformer.cli import main
from qtransformer.data import EpisodeDataset, EpisodeStore, TransitionSampler, build_transitions
from qtransformer.data.sampler import frame_windows
from qtransformer.envs import make_env
from qtransformer.envs.frames import FrameWindow
from qtransformer.envs.rollout import rollout
from qtransformer.policy import QTPolicy


def test_frame_windows_by_hand():
    # one chunk: episode 0 = steps 0-2, episode 1 = steps 3-4; image rows 0-4, then the final images 5 (ep 0) and 6 (ep 1)
    image_row = np.arange(5)
    next_image_row = np.array([1, 2, 5, 4, 6])
    first = np.array([0, 0, 0, 3, 3])
    t = np.array([0, 2, 3, 4])
    now, nxt = frame_windows(t, t, image_row, next_image_row, first, 3)
    assert now.tolist() == [[0, 0, 0], [0, 1, 2], [3, 3, 3], [3, 3, 4]]  # padded with the first frame, never episode 0's
    assert nxt.tolist() == [[0, 0, 1], [1, 2, 5], [3, 3, 4], [3, 4, 6]]  # the bootstrap state's window ends in its next image
    _, nxt = frame_windows(np.array([3]), np.array([4]), image_row, next_image_row, first, 3)  # 2-step: from step 3 to after step 4
    assert nxt.tolist() == [[3, 4, 6]]


def _numbered_dataset() -> EpisodeDataset:
    """Two episodes (3 and 2 steps) whose image pixels hold the step's number (final images: 100 + episode)."""
    eps = []
    for e, T in enumerate((3, 2)):
        eps.append({
            "observations": np.zeros((T, 1)), "next_observations": np.zeros((T, 1)), "actions": np.zeros((T, 1)), "rewards": np.zeros(T),
            "terminals": np.eye(T, dtype=bool)[-1], "timeouts": np.zeros(T, bool), "source": "demonstration",
            "images": {"cam": np.stack([np.full((2, 2, 3), 10 * e + k, np.uint8) for k in range(T)])},
            "final_images": {"cam": np.full((2, 2, 3), 100 + e, np.uint8)},
        })
    return EpisodeDataset.from_episodes(eps, [-1.0], [1.0])


def test_the_sampler_serves_windows_that_stay_in_their_episode():
    ds = _numbered_dataset()
    tr = build_transitions(ds, ActionDiscretizer(ds.action_low, ds.action_high, 4), 0.9, 1)
    s = TransitionSampler(tr, 64, "cpu", seed=0, frames=3)
    b = s.make_batch(0)
    assert b.images["cam"].shape == (64, 3, 2, 2, 3) and b.images["cam"].dtype == torch.uint8
    expected_now = {0: [0, 0, 0], 1: [0, 0, 1], 2: [0, 1, 2], 3: [10, 10, 10], 4: [10, 10, 11]}
    expected_next = {0: [0, 0, 1], 1: [0, 1, 2], 2: [1, 2, 100], 3: [10, 10, 11], 4: [10, 11, 101]}
    steps = s.indices(0)
    for row, step in enumerate(steps):
        assert b.images["cam"][row, :, 0, 0, 0].tolist() == expected_now[int(step)]
        assert b.next_images["cam"][row, :, 0, 0, 0].tolist() == expected_next[int(step)]


def test_frame_window_wrapper_pads_at_reset_and_the_recorder_keeps_single_frames():
    env = FrameWindow(make_env("qtransformer/PointReach3DImage-v0"), 4)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (4, 32, 32, 3) and all(np.array_equal(obs["image"][k], obs["image"][0]) for k in range(4))
    first = obs["image"][-1]
    obs, *_ = env.step(np.ones(3, np.float32))
    assert np.array_equal(obs["image"][2], first) and not np.array_equal(obs["image"][3], first)  # the newest frame last
    assert env.observation_space["image"].shape == (4, 32, 32, 3)
    ep = rollout(env, lambda o: np.zeros(3, np.float32), seed=1, frames=4)
    assert ep["images"]["image"].shape[1:] == (32, 32, 3) and ep["final_images"]["image"].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="needs Dict observations with camera entries"):
        FrameWindow(make_env("qtransformer/PointReach3D-v0"), 2)


def test_train_evaluate_and_collect_with_frame_windows(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["make-dataset", "builtin", "--demos", "3", "--autonomous", "3", "--images", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "4",
                 "--model.frames", "3", "--eval-episodes", "2", "--eval-every", "0"]) == 0  # the evaluation steps a FrameWindow
    policy = QTPolicy.from_checkpoint(run)
    assert policy.frames == 3 and policy.net.num_prefix == 1 + 3  # state, 3 frame tokens (one task)
    env = policy.make_env("qtransformer/PointReach3DImage-v0")
    obs, _ = env.reset(seed=0)
    assert np.array_equal(policy.act(obs), QTPolicy.from_checkpoint(run).act(obs))
    with pytest.raises(ValueError, match="windows of 3 frames"):
        policy.act({"state": obs["state"], "image": obs["image"][-1]})
    assert main(["collect", "--checkpoint", str(run), "--into", str(data), "--episodes", "2"]) == 0
    store = EpisodeStore.open(data)
    assert store.image_shapes == {"image": (32, 32, 3)} and store.num_episodes == 8  # single frames stored
    assert main(["eval", "--checkpoint", str(run), "--episodes", "2"]) == 0
    ft = tmp_path / "ft"  # fine-tuning steps FrameWindow environments and trains on windows of both datasets
    assert main(["finetune", "--checkpoint", str(run), "--out", str(ft), "--env-steps", "70", "--num-envs", "2", "--eval-episodes", "1",
                 "--no-progress", "--updates-per-step", "0.25"]) == 0
    online = EpisodeStore.open(ft / "online")
    assert online.image_shapes == {"image": (32, 32, 3)} and online.num_episodes >= 2
    capsys.readouterr()
