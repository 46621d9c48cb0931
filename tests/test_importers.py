"""Dataset importers (data/importers/): D4RL arrays, robomimic HDF5 and Minari datasets.

Each source is a small file built here with known values; the imported dataset must hold exactly
those values, cut into the right episodes with the right terminal/timeout flags, and every bad input
must raise DatasetError naming the field, with nothing written.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from qtransformer.cli import main
from qtransformer.data import DatasetError, EpisodeStore
from qtransformer.data.importers import ImportSourceError, import_dataset, read_d4rl

# -- D4RL ---------------------------------------------------------------------------------------

N = 7
TERMINALS = np.array([0, 0, 1, 0, 0, 0, 0], bool)
TIMEOUTS = np.array([0, 0, 0, 0, 1, 0, 0], bool)  # steps 5..6 end with neither flag: a trailing timeout


def d4rl_arrays(**overrides):
    arrays = {
        "observations": np.arange(N * 2, dtype=np.float64).reshape(N, 2),
        "actions": np.array([[0.1, -0.5], [0.2, 0.3], [-0.9, 0.0], [0.4, 0.8], [0.0, 0.1], [0.5, -0.2], [0.7, 0.9]], np.float32),
        "rewards": np.array([0, 0, 1, 0, 0, 0, 0.5], np.float32),
        "terminals": TERMINALS.copy(),
        "timeouts": TIMEOUTS.copy(),
    }
    arrays.update(overrides)
    return {k: v for k, v in arrays.items() if v is not None}


def write_flat(path, arrays):
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        h5py = pytest.importorskip("h5py")
        with h5py.File(path, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
    return path


def load_imported(result, out):
    ds = EpisodeStore.open(out).to_dataset()
    np.testing.assert_array_equal(ds.observations, result.dataset.observations)
    return ds


@pytest.mark.parametrize("suffix", [".npz", ".hdf5"])
def test_d4rl_without_next_observations(tmp_path, suffix):
    src = write_flat(tmp_path / f"d4rl{suffix}", d4rl_arrays())
    result = import_dataset(src, "d4rl", tmp_path / "out", env_id="x/Y-v0")
    ds = load_imported(result, tmp_path / "out")
    obs, act, rew = d4rl_arrays()["observations"], d4rl_arrays()["actions"], d4rl_arrays()["rewards"]
    # episode 0 (steps 0-2) is terminal: kept whole, its last next obs is its own obs;
    # episodes 1 (steps 3-4) and 2 (5-6, trailing) are timeouts: their last step is dropped.
    kept = [0, 1, 2, 3, 5]
    assert ds.episode_starts.tolist() == [0, 3, 4, 5]
    np.testing.assert_array_equal(ds.observations, obs[kept].astype(np.float32))
    np.testing.assert_array_equal(ds.next_observations, obs[[1, 2, 2, 4, 6]].astype(np.float32))
    np.testing.assert_array_equal(ds.actions, act[kept])
    np.testing.assert_array_equal(ds.rewards, rew[kept])
    assert ds.terminals.tolist() == [False, False, True, False, False]
    assert ds.timeouts.tolist() == [False, False, False, True, True]
    np.testing.assert_array_equal(ds.action_low, act[kept].min(axis=0))
    np.testing.assert_array_equal(ds.action_high, act[kept].max(axis=0))
    assert ds.episode_source == ["d4rl"] * 3 and ds.env_id == "x/Y-v0"
    assert any("dropped the last step of 2 episode(s)" in n for n in result.notes)


def test_d4rl_with_next_observations_and_bounds(tmp_path):
    obs = d4rl_arrays()["observations"]
    both = TIMEOUTS.copy()
    both[2] = True  # step 2 is terminal and timeout: imported as terminal
    arrays = d4rl_arrays(next_observations=obs + 100, timeouts=both,
                         action_low=np.array([-1, -2], np.float32), action_high=np.array([1, 2], np.float32))
    src = write_flat(tmp_path / "d4rl.npz", arrays)
    result = import_dataset(src, "d4rl", tmp_path / "out", source_label="expert")
    ds = load_imported(result, tmp_path / "out")
    assert ds.episode_starts.tolist() == [0, 3, 5, 7]
    np.testing.assert_array_equal(ds.observations, obs.astype(np.float32))
    np.testing.assert_array_equal(ds.next_observations, (obs + 100).astype(np.float32))
    np.testing.assert_array_equal(ds.actions, arrays["actions"])
    assert ds.terminals.tolist() == [False, False, True, False, False, False, False]
    assert ds.timeouts.tolist() == [False, False, False, False, True, False, True]
    assert ds.action_low.tolist() == [-1, -2] and ds.action_high.tolist() == [1, 2]
    assert ds.episode_source == ["expert"] * 3 and ds.env_id is None


def test_d4rl_constant_action_dimension_gets_a_range(tmp_path):
    acts = d4rl_arrays()["actions"].copy()
    acts[:, 1] = 0.25
    src = write_flat(tmp_path / "d.npz", d4rl_arrays(actions=acts, next_observations=d4rl_arrays()["observations"]))
    ds = import_dataset(src, "d4rl", tmp_path / "out").dataset
    assert ds.action_low[1] == pytest.approx(-0.75) and ds.action_high[1] == pytest.approx(1.25)


def raises_named(match, fn, *args, out=None, **kwargs):
    with pytest.raises(DatasetError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    if out is not None:
        assert not out.exists()
    return info.value


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"timeouts": None}, r"d\.npz, field 'timeouts': missing .*; add it"),
        ({"actions": np.zeros((N - 1, 2))}, r"field 'actions': 6 rows but 'observations' has 7"),
        ({"rewards": np.zeros((N, 3))}, r"field 'rewards': shape \(7, 3\)"),
        ({"observations": np.zeros(N)}, r"field 'observations': shape \(7,\), expected \(steps, obs_dim\)"),
        ({"next_observations": np.zeros((N, 3))}, r"field 'next_observations': shape \(7, 3\)"),
        ({"rewards": np.array([0, 0, 2, 0, 0, 0, 0], np.float32)}, r"episode 0, step 2, field 'rewards': 2\.0 is outside \[0, 1\]"),
        ({"action_low": np.zeros(3), "action_high": np.ones(3)}, r"field 'action_low': 3 entries but the actions have 2"),
        ({"action_low": np.zeros(2)}, r"field 'action_high': missing while its partner is present"),
        ({"action_low": np.zeros(2), "action_high": np.ones(2)}, r"field 'actions': .* outside the declared bounds"),
        ({"observations": np.zeros((0, 2)), "actions": np.zeros((0, 2)), "rewards": np.zeros(0),
          "terminals": np.zeros(0), "timeouts": np.zeros(0)}, r"field 'observations': the file holds no steps"),
    ],
)
def test_d4rl_bad_inputs(tmp_path, overrides, match):
    src = write_flat(tmp_path / "d.npz", d4rl_arrays(**overrides))
    raises_named(match, import_dataset, src, "d4rl", tmp_path / "out", out=tmp_path / "out")


def test_d4rl_nan_names_episode_and_field(tmp_path):
    obs = d4rl_arrays()["observations"].copy()
    obs[4, 1] = np.nan  # episode 1 (steps 3-4), its step 1
    src = write_flat(tmp_path / "d.npz", d4rl_arrays(observations=obs))
    raises_named(r"d\.npz: episode 1 \(file steps 3\.\.4\), step 1, field 'observations': NaN or inf", read_d4rl, src)


def test_d4rl_unreadable_files(tmp_path):
    good = write_flat(tmp_path / "good.npz", d4rl_arrays())
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    raises_named(r"cut\.npz: cannot read .*truncated, corrupted", read_d4rl, tmp_path / "cut.npz")
    raises_named(r"data\.csv: unknown file type '\.csv'", read_d4rl, tmp_path / "data.csv")
    raises_named(r"absent\.npz: no such file", read_d4rl, tmp_path / "absent.npz")
    np.savez(tmp_path / "pickled.npz", observations=np.array([{"a": 1}], dtype=object))
    raises_named(r"pickled\.npz: cannot read", read_d4rl, tmp_path / "pickled.npz")


def test_d4rl_truncated_hdf5_and_wrong_format(tmp_path):
    h5py = pytest.importorskip("h5py")
    good = write_flat(tmp_path / "good.hdf5", d4rl_arrays(observations=np.zeros((N, 2000))))
    data = good.read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(data[: len(data) // 2])
    raises_named(r"cut\.hdf5: cannot read .*truncated, corrupted", read_d4rl, tmp_path / "cut.hdf5")
    with h5py.File(tmp_path / "robo.hdf5", "w") as f:
        f.create_dataset("data/demo_0/actions", data=np.zeros((2, 2)))
    raises_named(r"robo\.hdf5, field 'observations': missing .*use --format robomimic", read_d4rl, tmp_path / "robo.hdf5")


# -- robomimic --------------------------------------------------------------------------------------


def robomimic_demo(T, seed, last_reward=1.0, last_done=1, next_obs=True):
    rng = np.random.default_rng(seed)
    demo = {
        "obs/b_pos": rng.standard_normal((T, 2)).astype(np.float32),
        "obs/a_flag": rng.standard_normal(T).astype(np.float32),  # 1-D: one value per step
        "obs/agentview_image": rng.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8),
        "actions": rng.uniform(-1, 1, (T, 3)).astype(np.float32),
        "rewards": np.r_[np.zeros(T - 1), last_reward].astype(np.float32),
        "dones": np.r_[np.zeros(T - 1), last_done].astype(np.int64),
    }
    if next_obs:
        demo["next_obs/b_pos"] = demo["obs/b_pos"] + 10
        demo["next_obs/a_flag"] = demo["obs/a_flag"] + 10
        demo["next_obs/agentview_image"] = rng.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8)
    return demo


def write_robomimic(path, demos: dict):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for name, demo in demos.items():
            for k, v in demo.items():
                f.create_dataset(f"data/{name}/{k}", data=v)
        f.create_group("mask")
    return path


def state(demo, group="obs"):
    return np.concatenate([demo[f"{group}/a_flag"][:, None], demo[f"{group}/b_pos"]], axis=1)


def test_robomimic_round_trip(tmp_path):
    demos = {
        "demo_10": robomimic_demo(2, seed=10, next_obs=False),  # success, no next_obs: terminal, kept whole
        "demo_2": robomimic_demo(3, seed=2, last_reward=0.0),  # done without reward: timeout
        "demo_0": robomimic_demo(4, seed=0),  # success: terminal
        "demo_1": robomimic_demo(3, seed=1, last_reward=0.0, last_done=0, next_obs=False),  # cut: last step dropped
    }
    src = write_robomimic(tmp_path / "low_dim.hdf5", demos)
    result = import_dataset(src, "robomimic", tmp_path / "out")
    ds = load_imported(result, tmp_path / "out")
    # ordered by the integer in demo_<i> (0, 1, 2, 10), not by name
    assert ds.episode_starts.tolist() == [0, 4, 6, 9, 11]
    d0, d1, d2, d10 = demos["demo_0"], demos["demo_1"], demos["demo_2"], demos["demo_10"]
    np.testing.assert_array_equal(ds.observations, np.concatenate([state(d0), state(d1)[:2], state(d2), state(d10)]))
    np.testing.assert_array_equal(
        ds.next_observations,
        np.concatenate([state(d0, "next_obs"), state(d1)[1:], state(d2, "next_obs"), state(d10)[[1, 1]]]),
    )
    np.testing.assert_array_equal(ds.actions, np.concatenate([d0["actions"], d1["actions"][:2], d2["actions"], d10["actions"]]))
    np.testing.assert_array_equal(ds.rewards, np.concatenate([d0["rewards"], d1["rewards"][:2], d2["rewards"], d10["rewards"]]))
    last = ds.episode_starts[1:] - 1
    assert ds.terminals[last].tolist() == [True, False, False, True]
    assert ds.timeouts[last].tolist() == [False, True, True, False]
    assert ds.episode_source == ["demonstration"] * 4
    assert ds.obs_dim == 3 and ds.action_dim == 3
    assert any("a_flag, b_pos" in n for n in result.notes)
    # the uint8 (T, 16, 16, 3) key is an image: the image at each kept step, and the one after the last step
    # (next_obs/<key>[-1] with next_obs; the dropped step's image for the cut demo_1; repeated for demo_10)
    img = "agentview_image"
    assert ds.image_shapes == {img: (16, 16, 3)}
    np.testing.assert_array_equal(
        ds.images[img], np.concatenate([d0[f"obs/{img}"], d1[f"obs/{img}"][:2], d2[f"obs/{img}"], d10[f"obs/{img}"]])
    )
    np.testing.assert_array_equal(
        ds.final_images[img],
        np.stack([d0[f"next_obs/{img}"][-1], d1[f"obs/{img}"][-1], d2[f"next_obs/{img}"][-1], d10[f"obs/{img}"][-1]]),
    )
    assert ds.final_images[img].dtype == np.uint8
    assert any("imported as uint8 (H, W, C) images: agentview_image (16, 16, 3)" in n for n in result.notes)
    assert any("final image of 1 terminal episode(s) repeats its last obs image" in n for n in result.notes)
    assert not any("skipped image" in n for n in result.notes)


def test_robomimic_images_without_next_obs(tmp_path):
    demos = {"demo_0": robomimic_demo(4, seed=0, next_obs=False), "demo_1": robomimic_demo(3, seed=1, last_reward=0.0, next_obs=False)}
    result = import_dataset(write_robomimic(tmp_path / "r.hdf5", demos), "robomimic", tmp_path / "out")
    ds = load_imported(result, tmp_path / "out")
    img = demos["demo_0"]["obs/agentview_image"], demos["demo_1"]["obs/agentview_image"]
    assert ds.episode_starts.tolist() == [0, 4, 6]  # demo_1 ends in a timeout: its last step is dropped
    np.testing.assert_array_equal(ds.images["agentview_image"], np.concatenate([img[0], img[1][:2]]))
    np.testing.assert_array_equal(ds.final_images["agentview_image"], np.stack([img[0][-1], img[1][-1]]))
    np.testing.assert_array_equal(ds.next_image_rows(), [1, 2, 3, 6, 5, 7])


def test_robomimic_no_images_and_skipped_keys(tmp_path, capsys):
    demo = robomimic_demo(3, seed=0)
    demo["obs/depth"] = np.zeros((3, 16, 16), np.uint8)  # (T, H, W): no channel axis
    demo["obs/float_image"] = np.zeros((3, 16, 16, 3), np.float32)
    src = write_robomimic(tmp_path / "r.hdf5", {"demo_0": demo})
    result = import_dataset(src, "robomimic", tmp_path / "out")
    assert sorted(result.dataset.images) == ["agentview_image"]
    skipped = [n for n in result.notes if "skipped image observation keys" in n]
    assert len(skipped) == 1 and "depth (shape (steps, 16, 16): no channel axis" in skipped[0]
    assert "float_image (dtype float32, images must be uint8)" in skipped[0]

    result = import_dataset(src, "robomimic", tmp_path / "out2", images=False)
    assert result.dataset.images == {} and result.dataset.final_images == {}
    assert any("agentview_image (--no-images)" in n for n in result.notes)
    ds = EpisodeStore.open(tmp_path / "out2").to_dataset()
    assert ds.images == {} and ds.obs_dim == 3
    np.testing.assert_array_equal(ds.observations, state(demo))

    assert main(["import", str(src), "--format", "robomimic", "--out", str(tmp_path / "out3"), "--no-images"]) == 0
    printed = capsys.readouterr().out
    assert "note: skipped image observation keys" in printed and "agentview_image (--no-images)" in printed
    assert EpisodeStore.open(tmp_path / "out3").to_dataset().images == {}


def test_robomimic_image_only_demo(tmp_path):
    demo = {k: v for k, v in robomimic_demo(3, seed=0).items() if "image" in k or "/" not in k}
    result = import_dataset(write_robomimic(tmp_path / "r.hdf5", {"demo_0": demo}), "robomimic", tmp_path / "out")
    ds = load_imported(result, tmp_path / "out")
    assert ds.obs_dim == 0 and ds.image_shapes == {"agentview_image": (16, 16, 3)}
    np.testing.assert_array_equal(ds.images["agentview_image"], demo["obs/agentview_image"])
    run = tmp_path / "run"  # a model that reads the images only trains too
    assert main(["train", "--preset", "smoke", "--dataset", str(tmp_path / "out"), "--out", str(run), "--no-progress", "--eval-episodes", "0"]) == 0


def test_robomimic_source_label(tmp_path):
    src = write_robomimic(tmp_path / "r.hdf5", {"demo_0": robomimic_demo(3, 0)})
    ds = import_dataset(src, "robomimic", tmp_path / "out", source_label="teleop", env_id="x/Y-v0").dataset
    assert ds.episode_source == ["teleop"] and ds.env_id == "x/Y-v0"


def drop(demo, key):
    return {k: v for k, v in demo.items() if k != key}


@pytest.mark.parametrize(
    "demos, match",
    [
        ({"demo_0": robomimic_demo(3, 0), "demo_1": drop(robomimic_demo(3, 1), "dones")},
         r"episode 1 \(data/demo_1\), field 'dones': missing"),
        ({"demo_0": {**robomimic_demo(3, 0), "obs/b_pos": np.zeros((2, 2))}},
         r"episode 0 \(data/demo_0\), field 'obs/b_pos': 2 steps but 'actions' has 3"),
        ({"demo_0": {**robomimic_demo(3, 0), "rewards": np.zeros(4)}}, r"field 'rewards': 4 steps but 'actions' has 3"),
        ({"demo_0": {**robomimic_demo(3, 0), "actions": np.array([[0, 0, 0], [np.inf, 0, 0], [0, 0, 0]])}},
         r"episode 0 \(data/demo_0\), step 1, field 'actions': NaN or inf"),
        ({"demo_0": robomimic_demo(3, 0), "demo_1": drop(robomimic_demo(3, 1), "next_obs/a_flag")},
         r"episode 1 \(data/demo_1\), field 'next_obs/a_flag': missing"),
        ({"demo_0": robomimic_demo(3, 0), "demo_1": {**robomimic_demo(3, 1), "obs/b_pos": np.zeros((3, 5))}},
         r"field 'obs/b_pos': 5 values per step but 2 in the first demo"),
        ({"demo_0": {k: v[:0] for k, v in robomimic_demo(3, 0).items()}}, r"field 'actions': the episode is empty"),
        ({"demo_0": {**robomimic_demo(3, 0), "rewards": np.array([0, 0, 5.0])}}, r"field 'rewards': 5\.0 is outside \[0, 1\]"),
        ({"demo_0": {"obs/img": np.zeros((3, 2, 2, 3)), **drop(drop(drop(robomimic_demo(3, 0), "obs/a_flag"), "obs/b_pos"), "obs/agentview_image")}},
         r"field 'obs': every observation key is an image, and none can be imported \(img: dtype float64"),
        ({"demo_0": {**robomimic_demo(3, 0), "obs/bad key": np.zeros((3, 2, 2, 3), np.uint8)}},
         r"episode 0 \(data/demo_0\), field 'obs/bad key': image key 'bad key' cannot name a file .*rename it in the source, or pass --no-images"),
        ({"demo_0": robomimic_demo(3, 0), "demo_1": {**robomimic_demo(3, 1), "obs/agentview_image": np.zeros((3, 8, 8, 3), np.uint8)}},
         r"episode 1 \(data/demo_1\), field 'obs/agentview_image': images of shape \(8, 8, 3\) but \(16, 16, 3\) in the first demo"),
        ({"demo_0": robomimic_demo(3, 0), "demo_1": drop(robomimic_demo(3, 1), "next_obs/agentview_image")},
         r"episode 1 \(data/demo_1\), field 'next_obs/agentview_image': missing"),
        ({"demo_0": {**robomimic_demo(3, 0), "obs/agentview_image": np.zeros((2, 16, 16, 3), np.uint8)}},
         r"field 'obs/agentview_image': 2 steps but 'actions' has 3"),
        ({"other": robomimic_demo(3, 0)}, r"field 'data': holds no demo_<i> groups"),
    ],
)
def test_robomimic_bad_inputs(tmp_path, demos, match):
    src = write_robomimic(tmp_path / "r.hdf5", demos)
    raises_named(match, import_dataset, src, "robomimic", tmp_path / "out", out=tmp_path / "out")


def test_robomimic_unreadable_and_wrong_format(tmp_path):
    pytest.importorskip("h5py")
    good = write_robomimic(tmp_path / "good.hdf5", {f"demo_{i}": robomimic_demo(50, i) for i in range(4)})
    data = good.read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(data[: len(data) // 2])
    raises_named(r"cut\.hdf5: cannot read .*truncated, corrupted", import_dataset, tmp_path / "cut.hdf5", "robomimic", tmp_path / "o")
    flat = write_flat(tmp_path / "flat.hdf5", d4rl_arrays())
    raises_named(r"flat\.hdf5, field 'data': missing .*use --format d4rl", import_dataset, flat, "robomimic", tmp_path / "o")
    np.savez(tmp_path / "x.npz", a=np.zeros(2))
    raises_named(r"x\.npz: cannot read .*not an HDF5 file", import_dataset, tmp_path / "x.npz", "robomimic", tmp_path / "o")


# -- Minari ---------------------------------------------------------------------------------------


@pytest.fixture
def minari_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    minari = pytest.importorskip("minari")
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    def create(dataset_id, episodes, obs_space, act_space, env=None, **extra):
        buffers = [EpisodeBuffer(id=i, **ep) for i, ep in enumerate(episodes)]
        with warnings.catch_warnings():  # minari asks for author, permalink, ...: not needed here
            warnings.simplefilter("ignore")
            minari.create_dataset_from_buffers(dataset_id, buffers, env=env, observation_space=obs_space, action_space=act_space, **extra)

    return create, gym


def minari_episode(T, seed, end):
    rng = np.random.default_rng(seed)
    term, trunc = np.zeros(T, bool), np.zeros(T, bool)
    term[-1] = end in ("terminal", "both")
    trunc[-1] = end in ("timeout", "both")
    return {
        "observations": {"b": rng.standard_normal((T + 1, 2)).astype(np.float32), "a": rng.standard_normal((T + 1, 1)).astype(np.float32)},
        "actions": rng.uniform(-2, 2, (T, 2)).astype(np.float32),
        "rewards": np.r_[np.zeros(T - 1), float(end != "timeout")],
        "terminations": term,
        "truncations": trunc,
    }


def test_minari_dict_round_trip(tmp_path, minari_env):
    create, gym = minari_env
    from qtransformer.envs import BUILTIN_ENV_ID

    obs_space = gym.spaces.Dict({"b": gym.spaces.Box(-9, 9, (2,), np.float32), "a": gym.spaces.Box(-9, 9, (1,), np.float32)})
    act_space = gym.spaces.Box(-2, 2, (2,), np.float32)
    eps = [minari_episode(3, 0, "terminal"), minari_episode(4, 1, "timeout"), minari_episode(2, 2, "both")]
    create("test/dict-v0", eps, obs_space, act_space, env=gym.spec(BUILTIN_ENV_ID))
    result = import_dataset("test/dict-v0", "minari", tmp_path / "out")
    ds = load_imported(result, tmp_path / "out")
    assert ds.episode_starts.tolist() == [0, 3, 7, 9]
    flat = [np.concatenate([ep["observations"]["a"], ep["observations"]["b"]], axis=1) for ep in eps]  # sorted keys
    np.testing.assert_array_equal(ds.observations, np.concatenate([f[:-1] for f in flat]))
    np.testing.assert_array_equal(ds.next_observations, np.concatenate([f[1:] for f in flat]))
    np.testing.assert_array_equal(ds.actions, np.concatenate([ep["actions"] for ep in eps]))
    np.testing.assert_array_equal(ds.rewards, np.concatenate([ep["rewards"] for ep in eps]).astype(np.float32))
    last = ds.episode_starts[1:] - 1
    assert ds.terminals[last].tolist() == [True, False, True]
    assert ds.timeouts[last].tolist() == [False, True, False]
    assert ds.action_low.tolist() == [-2, -2] and ds.action_high.tolist() == [2, 2]
    assert ds.env_id == BUILTIN_ENV_ID and ds.episode_source == ["minari"] * 3


def minari_image_episode(T, seed, end):
    ep = minari_episode(T, seed, end)
    rng = np.random.default_rng(100 + seed)
    ep["observations"] = {
        "state": ep["observations"]["b"],
        "cams": {"front": rng.integers(0, 256, (T + 1, 16, 16, 3), dtype=np.uint8),
                 "depth": rng.standard_normal((T + 1, 16, 16, 1)).astype(np.float32)},  # not uint8: skipped
    }
    return ep


def minari_image_space(gym):
    return gym.spaces.Dict({
        "state": gym.spaces.Box(-9, 9, (2,), np.float32),
        "cams": gym.spaces.Dict({"front": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),
                                 "depth": gym.spaces.Box(-np.inf, np.inf, (16, 16, 1), np.float32)}),
    })


def test_minari_image_round_trip(tmp_path, minari_env):
    create, gym = minari_env
    eps = [minari_image_episode(3, 0, "terminal"), minari_image_episode(4, 1, "timeout")]
    create("test/images-v0", eps, minari_image_space(gym), gym.spaces.Box(-2, 2, (2,), np.float32))
    result = import_dataset("test/images-v0", "minari", tmp_path / "out")
    ds = load_imported(result, tmp_path / "out")
    assert ds.image_shapes == {"cams.front": (16, 16, 3)}  # the leaf path, '/' -> '.'
    front = [ep["observations"]["cams"]["front"] for ep in eps]
    np.testing.assert_array_equal(ds.images["cams.front"], np.concatenate([f[:-1] for f in front]))
    np.testing.assert_array_equal(ds.final_images["cams.front"], np.stack([f[-1] for f in front]))  # observation T
    np.testing.assert_array_equal(ds.observations, np.concatenate([ep["observations"]["state"][:-1] for ep in eps]))
    assert any("skipped image observation keys" in n and "cams/depth (dtype float32, images must be uint8)" in n for n in result.notes)
    assert any("cams.front (16, 16, 3) (from 'cams/front')" in n for n in result.notes)
    assert any("state = Dict observation keys flattened in sorted order: state" in n for n in result.notes)

    no_images = import_dataset("test/images-v0", "minari", tmp_path / "out2", images=False)
    assert no_images.dataset.images == {} and any("cams/front (--no-images)" in n for n in no_images.notes)

    run = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--dataset", str(tmp_path / "out"), "--out", str(run), "--no-progress", "--eval-episodes", "0"]) == 0


def test_minari_bad_image_key(tmp_path, minari_env):
    create, gym = minari_env
    ep = minari_episode(2, 0, "terminal")
    ep["observations"] = {"state": ep["observations"]["b"], "front cam": np.zeros((3, 16, 16, 3), np.uint8)}
    space = gym.spaces.Dict({"state": gym.spaces.Box(-9, 9, (2,), np.float32), "front cam": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)})
    create("test/badkey-v0", [ep], space, gym.spaces.Box(-2, 2, (2,), np.float32))
    raises_named(r"field 'observations/front cam': image key 'front cam' cannot name a file .*pass --no-images",
                 import_dataset, "test/badkey-v0", "minari", tmp_path / "out", out=tmp_path / "out")
    ds = import_dataset("test/badkey-v0", "minari", tmp_path / "out", images=False).dataset
    assert ds.images == {} and ds.obs_dim == 2


def test_minari_box_unbounded_actions(tmp_path, minari_env):
    create, gym = minari_env
    ep = minari_episode(3, 0, "terminal")
    ep["observations"] = ep["observations"]["b"]
    create("test/box-v0", [ep], gym.spaces.Box(-9, 9, (2,), np.float32), gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    ds = import_dataset("test/box-v0", "minari", tmp_path / "out", env_id="x/Y-v0", source_label="mine").dataset
    np.testing.assert_array_equal(ds.observations, ep["observations"][:-1])
    np.testing.assert_array_equal(ds.action_low, ep["actions"].min(axis=0))
    np.testing.assert_array_equal(ds.action_high, ep["actions"].max(axis=0))
    assert ds.env_id == "x/Y-v0" and ds.episode_source == ["mine"]


def test_minari_bad_inputs(tmp_path, minari_env):
    create, gym = minari_env
    obs_space = gym.spaces.Box(-9, 9, (2,), np.float32)
    raises_named(r"minari dataset 'test/absent-v0': not found under .*MINARI_DATASETS_PATH",
                 import_dataset, "test/absent-v0", "minari", tmp_path / "out", out=tmp_path / "out")
    bad = minari_episode(3, 0, "terminal")
    bad["observations"] = bad["observations"]["b"].copy()
    bad["observations"][2, 0] = np.nan
    create("test/nan-v0", [minari_episode(2, 1, "timeout") | {"observations": np.zeros((3, 2), np.float32)}, bad],
           obs_space, gym.spaces.Box(-2, 2, (2,), np.float32))
    raises_named(r"episode 1 \(id 1\), step 2, field 'observations': NaN or inf",
                 import_dataset, "test/nan-v0", "minari", tmp_path / "out", out=tmp_path / "out")
    ok = minari_episode(2, 1, "timeout") | {"observations": np.zeros((3, 2), np.float32)}
    create("test/discrete-v0", [ok | {"actions": np.zeros(2, np.int64)}], obs_space, gym.spaces.Discrete(3))
    raises_named(r"field 'actions': action space Discrete\(3\) is not a Box",
                 import_dataset, "test/discrete-v0", "minari", tmp_path / "out", out=tmp_path / "out")


# -- command line ------------------------------------------------------------------------------------


def test_cli_import_then_train(tmp_path, capsys):
    rng = np.random.default_rng(0)
    T, E = 10, 6
    steps = T * E
    ends = np.zeros(steps, bool)
    ends[T - 1::T] = True
    arrays = {
        "observations": rng.standard_normal((steps, 3)).astype(np.float32),
        "next_observations": rng.standard_normal((steps, 3)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
        "rewards": (ends & (np.arange(steps) < steps // 2)).astype(np.float32),
        "terminals": ends & (np.arange(steps) < steps // 2),
        "timeouts": ends & (np.arange(steps) >= steps // 2),
    }
    src = write_flat(tmp_path / "d.npz", arrays)
    out, run = tmp_path / "ds", tmp_path / "run"
    assert main(["import", str(src), "--format", "d4rl", "--out", str(out), "--source", "mixed"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 6 episodes, 60 steps" in printed and "| mixed | 6 | 0.500 |" in printed
    assert main(["train", "--preset", "smoke", "--dataset", str(out), "--out", str(run), "--no-progress", "--eval-episodes", "0"]) == 0
    # a bad file: exit code 2, the message on stderr, nothing written
    bad = write_flat(tmp_path / "bad.npz", {k: v for k, v in arrays.items() if k != "terminals"})
    assert main(["import", str(bad), "--format", "d4rl", "--out", str(tmp_path / "bad_out")]) == 2
    assert "field 'terminals': missing" in capsys.readouterr().err
    assert not (tmp_path / "bad_out").exists()


def test_cli_import_robomimic_images_then_train(tmp_path, capsys):
    demos = {f"demo_{i}": robomimic_demo(8, seed=i, last_reward=float(i % 2), next_obs=i < 3) for i in range(5)}
    src = write_robomimic(tmp_path / "image.hdf5", demos)
    out, run = tmp_path / "ds", tmp_path / "run"
    assert main(["import", str(src), "--format", "robomimic", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "camera 'agentview_image' (16, 16, 3) uint8" in printed
    assert EpisodeStore.open(out).to_dataset().image_shapes == {"agentview_image": (16, 16, 3)}
    assert main(["train", "--preset", "smoke", "--dataset", str(out), "--out", str(run), "--no-progress", "--eval-episodes", "0"]) == 0


def test_import_error_is_a_dataset_error():
    assert issubclass(ImportSourceError, DatasetError)
    with pytest.raises(DatasetError, match="unknown format 'csv'"):
        import_dataset("x", "csv", "out")
