"""MetaWorld adapter: the sparse-reward env, the scripted experts, the recipes and the dataset maker."""

import sys

import numpy as np
import pytest

pytest.importorskip("metaworld")

from qtransformer.envs.metaworld import (  # noqa: E402
    MT10_TASKS,
    instruction_for,
    make_metaworld_env,
    metaworld_env_id,
    parse_env_id,
    scripted_expert,
    single_task_env_ids,
    tasks_from_env_id,
)
from qtransformer.envs.metaworld_dataset import make_metaworld_dataset, perturbed_policy, replay_policy  # noqa: E402
from qtransformer.envs.rollout import rollout  # noqa: E402


def test_reset_and_step_shapes():
    env = make_metaworld_env("reach-v3", seed=0, max_steps=10)
    assert env.observation_space.shape == (39,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (4,)
    assert np.all(env.action_space.low == -1.0) and np.all(env.action_space.high == 1.0)
    obs, info = env.reset(seed=0)
    assert obs.shape == (39,) and obs.dtype == np.float32 and info["success"] is False
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert obs.shape == (39,) and obs.dtype == np.float32
    assert reward == 0.0 and terminated is False and truncated is False


def test_timeout_without_success():
    env = make_metaworld_env("reach-v3", seed=0, max_steps=12)
    ep = rollout(env, lambda o: np.zeros(4, np.float32), seed=0)
    assert len(ep["rewards"]) == 12
    assert ep["rewards"].sum() == 0.0 and not ep["terminals"].any()
    assert ep["timeouts"][-1] and not ep["timeouts"][:-1].any()


def test_expert_reaches_with_sparse_reward_and_termination():
    env = make_metaworld_env("reach-v3", seed=3)
    ep = rollout(env, scripted_expert("reach-v3"), seed=0)
    T = len(ep["rewards"])
    assert T < env.max_steps
    assert ep["rewards"][-1] == 1.0 and ep["rewards"][:-1].sum() == 0.0
    assert ep["terminals"][-1] and not ep["terminals"][:-1].any() and not ep["timeouts"].any()


def test_seed_fixes_the_variation_and_vary_task_follows_reset_seed():
    a, b = make_metaworld_env("push-v3", seed=0), make_metaworld_env("push-v3", seed=1)
    oa0, _ = a.reset(seed=0)
    oa1, _ = a.reset(seed=1)
    ob, _ = b.reset(seed=0)
    np.testing.assert_array_equal(oa0, oa1)  # one fixed variation per env
    assert not np.allclose(oa0, ob)  # chosen by the env's seed
    v = make_metaworld_env("push-v3", seed=0, vary_task=True)
    o0, i0 = v.reset(seed=0)
    o1, i1 = v.reset(seed=1)
    assert i0["variation"] != i1["variation"] and not np.allclose(o0, o1)


def test_expert_class_names_and_errors():
    assert callable(scripted_expert("peg-insert-side-v3"))  # SawyerPegInsertionSideV3Policy
    a = scripted_expert("button-press-topdown-v3")(make_metaworld_env("button-press-topdown-v3", 0).reset(seed=0)[0])
    assert a.shape == (4,) and a.dtype == np.float32
    with pytest.raises(ValueError, match="unknown MetaWorld task"):
        make_metaworld_env("reach-v9", seed=0)
    with pytest.raises(ValueError, match="recipe"):
        make_metaworld_dataset(["reach-v3"], 1, 1, recipe="nope", seed=0, max_steps=10, progress=False)


def test_replay_without_noise_repeats_the_demonstration():
    env = make_metaworld_env("reach-v3", seed=0, vary_task=True)
    demo = rollout(env, scripted_expert("reach-v3"), seed=5)
    again = rollout(env, replay_policy(demo["actions"], np.random.default_rng(0), noise=0.0), seed=5)
    np.testing.assert_array_equal(demo["observations"], again["observations"])
    assert again["rewards"][-1] == 1.0


def test_perturbed_policy_actions_in_bounds():
    env = make_metaworld_env("pick-place-v3", seed=0, max_steps=30)
    ep = rollout(env, perturbed_policy("pick-place-v3", np.random.default_rng(0), severity=3.0), seed=0)
    assert np.all(np.abs(ep["actions"]) <= 1.0) and ep["actions"].dtype == np.float32


@pytest.mark.parametrize("recipe", ["replay", "perturbed"])
def test_dataset_one_task(recipe):
    ds = make_metaworld_dataset(["reach-v3"], demos=2, autonomous=3, recipe=recipe, seed=0, max_steps=150, progress=False)
    ds.validate()
    assert ds.num_episodes == 5 and ds.obs_dim == 39 and ds.action_dim == 4
    assert ds.episode_source == ["demonstration"] * 2 + ["autonomous"] * 3
    assert ds.task_names == ["reach-v3"] and ds.env_id == "metaworld:reach-v3"
    assert ds.episode_instruction == ["reach the goal"] * 5
    assert ds.episode_success()[:2].all()  # the noisy expert reaches
    assert set(np.unique(ds.rewards)) <= {0.0, 1.0}


def test_names_and_instructions():
    assert metaworld_env_id(list(MT10_TASKS)) == "metaworld:mt10"
    assert metaworld_env_id(["reach-v3", "push-v3"]) == "metaworld:reach-v3,push-v3"
    assert tasks_from_env_id("metaworld:mt10") == MT10_TASKS
    assert tasks_from_env_id("metaworld:reach-v3,push-v3") == ["reach-v3", "push-v3"]
    assert instruction_for("drawer-open-v3") == "open the drawer"
    assert instruction_for("coffee-pull-v3") == "coffee pull"


def test_camera_ids_round_trip_and_bad_ones_are_refused():
    env_id = metaworld_env_id(["reach-v3", "push-v3"], "corner", 48)
    assert env_id == "metaworld:reach-v3,push-v3?camera=corner&size=48"
    assert parse_env_id(env_id) == (["reach-v3", "push-v3"], "corner", 48, "full")
    assert parse_env_id("metaworld:reach-v3") == (["reach-v3"], None, 64, "full")
    fast = metaworld_env_id(["reach-v3", "push-v3"], "corner", 48, "fast")
    assert fast == "metaworld:reach-v3,push-v3?camera=corner&size=48&render=fast"
    assert parse_env_id(fast).render == "fast"
    assert single_task_env_ids(fast) == ["metaworld:reach-v3?camera=corner&size=48&render=fast", "metaworld:push-v3?camera=corner&size=48&render=fast"]
    assert metaworld_env_id(list(MT10_TASKS), "topview") == "metaworld:mt10?camera=topview&size=64"
    assert single_task_env_ids(env_id) == ["metaworld:reach-v3?camera=corner&size=48", "metaworld:push-v3?camera=corner&size=48"]
    assert tasks_from_env_id(env_id) == ["reach-v3", "push-v3"]
    for bad, match in (("?camera=kitchen", "unknown MetaWorld camera 'kitchen'"), ("?camera=corner&size=8", "16 to 512"),
                       ("?camera=corner&size=big", "whole number"), ("?zoom=2", "unknown option 'zoom=2'"), ("?size=64", "needs camera"),
                       ("?render=fast", "needs camera"), ("?camera=corner&render=quick", "unknown render mode 'quick'")):
        with pytest.raises(ValueError, match=match):
            parse_env_id("metaworld:reach-v3" + bad)


def test_fast_frames_without_a_camera_are_refused_wherever_they_are_asked_for():
    """Only camera frames are drawn: render="fast" without a camera is an error in the Python API too, not a
    state-only dataset or environment made without a word."""
    for make in (lambda: make_metaworld_dataset(["reach-v3"], demos=1, autonomous=0, max_steps=2, progress=False, render="fast"),
                 lambda: make_metaworld_env("reach-v3", render="fast"),
                 lambda: parse_env_id("metaworld:reach-v3?render=fast")):
        with pytest.raises(ValueError, match="needs camera"):
            make()


def test_camera_observations_and_the_same_episodes_with_frames():
    from qtransformer.envs import make_env

    env = make_env("metaworld:reach-v3?camera=corner&size=32")
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"state", "image"} and obs["state"].shape == (39,) and obs["image"].shape == (32, 32, 3)
    assert obs["image"].dtype == np.uint8 and obs["image"].std() > 5  # a picture, not a blank
    assert env.observation_space["image"].shape == (32, 32, 3)
    obs2, *_ = env.step(np.zeros(4, np.float32))
    assert obs2["image"].shape == (32, 32, 3)
    env.close()
    kw = dict(demos=1, autonomous=1, recipe="perturbed", seed=2, max_steps=8, progress=False)
    plain = make_metaworld_dataset(["reach-v3"], **kw)
    seen = make_metaworld_dataset(["reach-v3"], camera="corner", image_size=32, **kw)
    for key in ("observations", "actions", "rewards", "terminals", "timeouts", "episode_starts"):
        np.testing.assert_array_equal(getattr(plain, key), getattr(seen, key))  # the camera only adds frames
    assert seen.images["image"].shape == (len(seen.actions), 32, 32, 3) and not plain.images
    assert seen.env_id == "metaworld:reach-v3?camera=corner&size=32"


def test_missing_metaworld_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "metaworld", None)
    with pytest.raises(ImportError, match=r"\.\[sim\]"):
        make_metaworld_env("reach-v3", seed=0)


def test_offscreen_rendering_gives_frames():
    env = make_metaworld_env("reach-v3", seed=0, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8 and frame.std() > 5  # a picture, not a blank


def test_no_renderer_is_chosen_unless_rendering(monkeypatch):
    """Making a dataset renders nothing: it must not ask for OpenGL (MUJOCO_GL=osmesa needs libOSMesa)."""
    import os

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    env = make_metaworld_env("reach-v3", seed=0, max_steps=3)
    env.reset(seed=0)
    env.close()
    scripted_expert("reach-v3")
    assert "MUJOCO_GL" not in os.environ and "PYOPENGL_PLATFORM" not in os.environ
    make_metaworld_env("reach-v3", seed=0, max_steps=3, render_mode="rgb_array").close()
    assert os.environ["MUJOCO_GL"] == "osmesa"  # videos: the software renderer unless the user chose one


def test_the_former_module_still_exports_the_adapter():
    """envs/metaworld_tasks.py was split into envs/metaworld.py and envs/metaworld_dataset.py; the old path stays."""
    from qtransformer.envs import metaworld_tasks

    assert metaworld_tasks.make_metaworld_env is make_metaworld_env and metaworld_tasks.make_metaworld_dataset is make_metaworld_dataset
    assert all(hasattr(metaworld_tasks, name) for name in metaworld_tasks.__all__)


def test_fast_frames_drop_shadows_and_multisampling_and_keep_the_scene():
    """render=fast: the same scene from the same camera, drawn without the shadow map and multisampling;
    the settings reach MuJoCo before its offscreen context is made (else the frames would be identical)."""
    from qtransformer.envs import make_env

    frames = {}
    for render in ("full", "fast"):
        env = make_env(metaworld_env_id(["reach-v3"], "corner", 32, render))
        obs, _ = env.reset(seed=0)
        model = env.unwrapped._env.model
        frames[render] = obs["image"].astype(np.float32)
        frames[render + "_settings"] = (int(model.vis.quality.shadowsize), int(model.vis.quality.offsamples), int(model.light_castshadow.sum()))
        env.close()
    assert frames["full_settings"] == (4096, 4, 1)  # MetaWorld's scene as shipped
    assert frames["fast_settings"] == (0, 0, 0)
    diff = np.abs(frames["full"] - frames["fast"])
    assert diff.mean() > 0.5  # drawn differently (no shadow, no antialiasing) ...
    assert diff.mean() < 20 and np.corrcoef(frames["full"].ravel(), frames["fast"].ravel())[0, 1] > 0.9  # ... of the same scene
