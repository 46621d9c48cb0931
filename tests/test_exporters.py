"""Minari exporter (data/exporters.py): dataset folder -> local Minari dataset -> `read_minari` import.

The round trip must give back the observations, next observations, actions, rewards, terminal/timeout
flags and episode boundaries exactly; sources and task names travel in Minari's episode metadata.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from qtransformer.cli import main
from qtransformer.data import DatasetError, EpisodeDataset, EpisodeStore
from qtransformer.data.exporters import ExportError, export_episodes_minari, export_minari
from qtransformer.data.importers import read_minari

minari = pytest.importorskip("minari")

LOW, HIGH = np.array([-1.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32)


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def episode(T, seed, end, source, task=0):
    """T steps along a random walk of T+1 states; `end` is 'terminal', 'timeout' or 'both'."""
    rng = np.random.default_rng(seed)
    states = rng.standard_normal((T + 1, 3)).astype(np.float32)
    term, tout = np.zeros(T, bool), np.zeros(T, bool)
    term[-1] = end in ("terminal", "both")
    tout[-1] = end in ("timeout", "both")
    return {
        "observations": states[:-1], "next_observations": states[1:],
        "actions": rng.uniform(LOW, HIGH, (T, 2)).astype(np.float32),
        "rewards": np.r_[np.zeros(T - 1), float(end == "terminal")].astype(np.float32),
        "terminals": term, "timeouts": tout, "source": source, "task": task,
    }


def make_store(path):
    first = EpisodeDataset.from_episodes(
        [episode(3, 0, "terminal", "demonstration"), episode(4, 1, "timeout", "autonomous", task=1), episode(1, 2, "terminal", "demonstration")],
        LOW, HIGH, task_names=["reach", "push"], env_id="qtransformer/PointReach3D-v0",
    )
    second = EpisodeDataset.from_episodes(
        [episode(5, 3, "timeout", "teleop"), episode(2, 4, "terminal", "autonomous")], LOW, HIGH, task_names=["push"],
    )
    EpisodeStore.create(path, first)
    return EpisodeStore.open(path).append(second)


def test_round_trip_two_chunks(tmp_path, minari_root):
    store = make_store(tmp_path / "ds")
    assert len(store.chunks) == 2
    src = store.to_dataset()
    out = export_minari(tmp_path / "ds", "qt/roundtrip-v0")
    assert out == minari_root / "qt/roundtrip-v0" and (out / "data").is_dir()

    back = read_minari("qt/roundtrip-v0").dataset
    assert back.episode_starts.tolist() == src.episode_starts.tolist() == [0, 3, 7, 8, 13, 15]
    for name in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(back, name), getattr(src, name), err_msg=name)
    np.testing.assert_array_equal(back.action_low, LOW)
    np.testing.assert_array_equal(back.action_high, HIGH)

    mds = minari.load_dataset("qt/roundtrip-v0")
    assert mds.total_episodes == 5 and mds.total_steps == 15 and mds.env_spec is None
    assert mds.observation_space.shape == (3,) and mds.observation_space.dtype == np.float32
    meta = list(mds.storage.get_episode_metadata(range(5)))
    assert [m["source"] for m in meta] == src.episode_source == ["demonstration", "autonomous", "demonstration", "teleop", "autonomous"]
    assert [m["task_name"] for m in meta] == ["reach", "push", "reach", "push", "push"]
    assert [int(m["task"]) for m in meta] == src.episode_task.tolist()
    qt = mds.storage.metadata["qtransformer"]
    assert qt["env_id"] == "qtransformer/PointReach3D-v0" and qt["task_names"] == ["reach", "push"]
    assert "qt/roundtrip-v0" in minari.list_local_datasets()


def test_existing_id_and_bad_id(tmp_path, minari_root):
    make_store(tmp_path / "ds")
    export_minari(tmp_path / "ds", "qt/taken-v0")
    before = sorted(p.name for p in (minari_root / "qt/taken-v0" / "data").iterdir())
    with pytest.raises(ExportError, match=r"minari dataset 'qt/taken-v0': already exists under .*choose another --dataset-id.*minari delete qt/taken-v0") as info:
        export_minari(tmp_path / "ds", "qt/taken-v0")
    assert "\n" not in str(info.value) and isinstance(info.value, DatasetError)
    assert sorted(p.name for p in (minari_root / "qt/taken-v0" / "data").iterdir()) == before
    with pytest.raises(ExportError, match=r"'no version': malformed id"):
        export_minari(tmp_path / "ds", "no version")
    with pytest.raises(DatasetError, match="no dataset folder here"):
        export_minari(tmp_path / "absent", "qt/absent-v0")
    assert not (minari_root / "qt/absent-v0").exists()


def test_failure_leaves_nothing_and_missing_minari(tmp_path, minari_root, monkeypatch):
    make_store(tmp_path / "ds")

    def boom(self, buffer):
        raise OSError("disk full")

    monkeypatch.setattr(minari.MinariDataset, "update_dataset_from_buffer", boom)  # fails at the second chunk
    with pytest.raises(ExportError, match=r"'qt/broken-v0': writing failed \(OSError: disk full\); nothing was kept"):
        export_minari(tmp_path / "ds", "qt/broken-v0")
    assert not (minari_root / "qt/broken-v0").exists()
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari now raises ImportError
    with pytest.raises(ExportError, match=r"needs minari, which is not installed; install the import extra: pip install"):
        export_minari(tmp_path / "ds", "qt/nominari-v0")


def test_next_observation_mismatch_is_noted(tmp_path, minari_root):
    ep = episode(3, 0, "timeout", "demonstration")
    ep["next_observations"] = ep["next_observations"] + np.float32(0.5)  # not the following observations
    notes = []
    export_episodes_minari([EpisodeDataset.from_episodes([ep], LOW, HIGH)], "qt/mismatch-v0", notes=notes)
    assert any("2 step(s) have a next observation that differs" in n for n in notes)
    back = read_minari("qt/mismatch-v0").dataset
    np.testing.assert_array_equal(back.next_observations[-1], ep["next_observations"][-1])  # the last one is exported


def test_cli_export(tmp_path, minari_root, capsys):
    make_store(tmp_path / "ds")
    argv = ["export", str(tmp_path / "ds"), "--format", "minari", "--dataset-id", "qt/cli-v0", "--env-id", "x/Y-v0"]
    assert main(argv) == 0
    assert "wrote minari dataset 'qt/cli-v0'" in capsys.readouterr().out
    mds = minari.load_dataset("qt/cli-v0")
    assert mds.total_episodes == 5 and mds.storage.metadata["qtransformer"]["env_id"] == "x/Y-v0"
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def _has_images() -> bool:
    # a default_factory dataclass field is not a class attribute, so hasattr alone misses it
    return hasattr(EpisodeDataset, "images") or "images" in {f.name for f in dataclasses.fields(EpisodeDataset)}


def with_images(ep, seed):
    rng = np.random.default_rng(seed)
    T = len(ep["rewards"])  # 32x32: Minari would JPEG-encode (lossy) images this large unless told not to
    return ep | {"images": {"cam": rng.integers(0, 256, (T, 32, 32, 3), dtype=np.uint8)},
                 "final_images": {"cam": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)}}


def test_image_observations(tmp_path, minari_root):
    if not _has_images():
        pytest.skip("EpisodeDataset has no image observations yet")
    eps = [with_images(episode(3, 0, "terminal", "demonstration"), 0), with_images(episode(2, 1, "timeout", "autonomous"), 1),
           with_images(episode(4, 2, "timeout", "autonomous"), 2)]
    EpisodeStore.create(tmp_path / "ds", EpisodeDataset.from_episodes(eps[:2], LOW, HIGH))
    EpisodeStore.open(tmp_path / "ds").append(EpisodeDataset.from_episodes(eps[2:], LOW, HIGH))
    export_minari(tmp_path / "ds", "qt/images-v0")
    mds = minari.load_dataset("qt/images-v0")
    assert sorted(mds.observation_space.spaces) == ["cam", "state"]
    assert mds.observation_space["cam"].dtype == np.uint8 and mds.observation_space["cam"].shape == (32, 32, 3)
    for ep, src in zip(mds.iterate_episodes(), eps, strict=True):
        np.testing.assert_array_equal(ep.observations["cam"], np.concatenate([src["images"]["cam"], src["final_images"]["cam"][None]]))
        np.testing.assert_array_equal(ep.observations["state"], np.concatenate([src["observations"], src["next_observations"][-1:]]))
    back = read_minari("qt/images-v0")  # export then import: state and images both come back
    np.testing.assert_array_equal(back.dataset.observations, np.concatenate([ep["observations"] for ep in eps]))
    assert back.dataset.episode_starts.tolist() == [0, 3, 5, 9]
    np.testing.assert_array_equal(back.dataset.images["cam"], np.concatenate([ep["images"]["cam"] for ep in eps]))
    np.testing.assert_array_equal(back.dataset.final_images["cam"], np.stack([ep["final_images"]["cam"] for ep in eps]))
