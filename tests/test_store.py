"""The on-disk store (data/store.py): memory maps, appends, crash safety; and the sampler over chunks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from qtransformer.actions import ActionDiscretizer
from qtransformer.data import DatasetError, EpisodeDataset, EpisodeStore, TransitionSampler, append_episodes, build_transitions


def episodes(n, seed, length=5, obs_dim=3, d=2, source="autonomous", task=0, success_every=2):
    rng = np.random.default_rng(seed)
    out = []
    for e in range(n):
        T = length + e % 3
        obs = rng.standard_normal((T + 1, obs_dim)).astype(np.float32)
        success = e % success_every == 0
        out.append({
            "observations": obs[:-1], "next_observations": obs[1:],
            "actions": rng.uniform(-1, 1, (T, d)).astype(np.float32),
            "rewards": np.eye(T, dtype=np.float32)[-1] * success,
            "terminals": np.eye(T, dtype=bool)[-1] * success, "timeouts": np.eye(T, dtype=bool)[-1] * (not success),
            "source": source, "task": task,
        })
    return out


def make(n, seed, task_names=("reach",), **kw):
    return EpisodeDataset.from_episodes(episodes(n, seed, **kw), [-1, -1], [1, 1], task_names=list(task_names), env_id="E-v0")


def test_open_memory_maps_the_step_arrays(tmp_path):
    ds = make(4, 0)
    store = EpisodeStore.create(tmp_path / "d", ds)
    chunk = store.chunks[0]
    for name in ("observations", "next_observations", "actions", "rewards"):
        # the wide arrays stay on disk; one value per step is read into memory (a memory map holds an open file)
        assert isinstance(getattr(chunk, name), np.memmap) == (name != "rewards")
        np.testing.assert_array_equal(getattr(chunk, name), getattr(ds, name))
    assert store.num_episodes == 4 and store.num_steps == ds.num_steps and store.env_id == "E-v0"


def test_appends_add_chunks_and_episodes_never_leak_across_them(tmp_path):
    a, b, c = make(3, 0), make(4, 1, source="demonstration"), make(2, 2)
    path = tmp_path / "d"
    append_episodes(path, a)  # creates
    append_episodes(path, b)
    store = append_episodes(path, c)
    assert [len(x.episode_source) for x in store.chunks] == [3, 4, 2]
    assert store.num_episodes == 9 and json.loads((path / "meta.json").read_text())["num_episodes"] == 9
    joined = store.to_dataset()
    np.testing.assert_array_equal(joined.observations, np.concatenate([a.observations, b.observations, c.observations]))
    assert store.success_by_source()["demonstration"] == (4, 0.5)
    # per-step quantities over the chunks equal those over the one in-memory dataset
    disc = ActionDiscretizer([-1, -1], [1, 1], 8)
    over_store = build_transitions(store, disc, gamma=0.9, n_step=3)
    in_memory = build_transitions(joined, disc, gamma=0.9, n_step=3)
    for key in ("bins", "reward", "discount", "bootstrap", "next_index", "mc_return", "task", "source"):
        np.testing.assert_array_equal(over_store[key], in_memory[key])
    idx = np.arange(store.num_steps)
    np.testing.assert_array_equal(over_store["next_observations"].gather(over_store["next_index"][idx]),
                                  joined.next_observations[in_memory["next_index"]])


@pytest.mark.parametrize(
    "bad, field",
    [
        (lambda: make(2, 5, obs_dim=4), "observations"),
        (lambda: EpisodeDataset.from_episodes(episodes(2, 5), [-2, -2], [2, 2]), "actions"),
    ],
)
def test_a_failed_append_changes_nothing(tmp_path, bad, field):
    path = tmp_path / "d"
    EpisodeStore.create(path, make(3, 0))
    meta_before = (path / "meta.json").read_text()
    ds = bad()
    if field == "actions":
        ds.actions[0] = [1.5, 0.0]
    with pytest.raises(DatasetError, match=field):
        EpisodeStore.open(path).append(ds)
    assert (path / "meta.json").read_text() == meta_before
    assert sorted(os.listdir(path / "chunks")) == ["000000"]


def test_new_task_names_are_added_and_ids_remapped(tmp_path):
    path = tmp_path / "d"
    EpisodeStore.create(path, make(2, 0, task_names=("reach",)))
    store = EpisodeStore.open(path).append(make(2, 1, task_names=("push", "reach"), task=0))  # task 0 = push
    assert store.task_names == ["reach", "push"]
    assert store.chunks[1].episode_task.tolist() == [1, 1]
    assert set(store.success_by("task")) == {"reach", "push"}


def test_append_killed_before_its_commit_leaves_the_dataset_as_it_was(tmp_path):
    path, pause = tmp_path / "d", tmp_path / "paused"
    EpisodeStore.create(path, make(3, 0))
    script = (
        "import numpy as np\n"
        "from qtransformer.data import EpisodeStore\n"
        "from tests_helper_make import make\n"
    )
    helper = tmp_path / "tests_helper_make.py"
    helper.write_text(
        "import numpy as np\n"
        "from qtransformer.data import EpisodeDataset\n"
        "def make(n, seed):\n"
        "    rng = np.random.default_rng(seed)\n"
        "    eps = []\n"
        "    for e in range(n):\n"
        "        obs = rng.standard_normal((6, 3)).astype(np.float32)\n"
        "        eps.append({'observations': obs[:-1], 'next_observations': obs[1:], 'actions': rng.uniform(-1, 1, (5, 2)).astype(np.float32),\n"
        "                    'rewards': np.zeros(5, np.float32), 'terminals': np.zeros(5, bool), 'timeouts': np.eye(5, dtype=bool)[-1], 'source': 'autonomous'})\n"
        "    return EpisodeDataset.from_episodes(eps, [-1, -1], [1, 1], task_names=['reach'])\n"
    )
    script += f"EpisodeStore.open({str(path)!r}).append(make(50, 9))\n"
    env = {**os.environ, "QTRANSFORMER_TEST_APPEND_PAUSE_FILE": str(pause), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 60
        while not pause.exists():  # the chunk is written and renamed; meta.json is not yet replaced
            assert proc.poll() is None, "the append process ended before pausing"
            assert time.time() < deadline
            time.sleep(0.05)
        assert (path / "chunks" / "000001").is_dir()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    store = EpisodeStore.open(path)
    assert store.num_episodes == 3 and len(store.chunks) == 1
    # the next append removes the uncommitted chunk and commits its own
    store = store.append(make(2, 1))
    assert store.num_episodes == 5 and sorted(os.listdir(path / "chunks")) == ["000000", "000001"]
    assert len(store.chunks[1].episode_source) == 2


def _transitions(tmp_path):
    store = append_episodes(tmp_path / "d", make(6, 0))
    store = append_episodes(tmp_path / "d", make(3, 1, source="demonstration"))
    return build_transitions(store, ActionDiscretizer([-1, -1], [1, 1], 8), gamma=0.9, n_step=1)


def test_prefetching_gives_the_same_batches(tmp_path):
    tr = _transitions(tmp_path)
    plain = TransitionSampler(tr, 16, "cpu", seed=7)
    ahead = TransitionSampler(tr, 16, "cpu", seed=7, prefetch=3)
    try:
        for _ in range(5):
            a, b = plain.sample(), ahead.sample()
            for (ka, ta), (kb, tb) in zip(a.tensors(), b.tensors(), strict=True):
                assert ka == kb and torch.equal(ta, tb), ka
        ahead.set_state(2)  # jump back, as a resume does
        plain2 = TransitionSampler(tr, 16, "cpu", seed=7)
        plain2.set_state(2)
        assert torch.equal(ahead.sample().obs, plain2.sample().obs)
    finally:
        ahead.close()


def test_source_mix_fixes_the_share_of_each_batch(tmp_path):
    tr = _transitions(tmp_path)
    demo = tr["source_labels"].index("demonstration")
    sampler = TransitionSampler(tr, 20, "cpu", seed=0, source_mix={"demonstration": 0.75})
    for _ in range(3):
        idx = sampler.indices(sampler.batches_drawn)
        sampler.batches_drawn += 1
        assert (tr["source"][idx] == demo).sum() == 15
    uniform = TransitionSampler(tr, 2000, "cpu", seed=0)
    share = (tr["source"][uniform.indices(0)] == demo).mean()
    assert abs(share - (tr["source"] == demo).mean()) < 0.05  # without a mix: the data's own share
    with pytest.raises(ValueError, match="human"):
        TransitionSampler(tr, 20, "cpu", seed=0, source_mix={"human": 0.5})
    with pytest.raises(ValueError, match="add up"):
        TransitionSampler(tr, 20, "cpu", seed=0, source_mix={"demonstration": 0.8, "autonomous": 0.5})


def test_instructions_travel_with_the_episodes(tmp_path):
    eps = episodes(3, 0)
    for i, ep in enumerate(eps):
        ep["instruction"] = f"reach goal {i}"
    ds = EpisodeDataset.from_episodes(eps, [-1, -1], [1, 1])
    store = EpisodeStore.create(tmp_path / "d", ds).append(ds)
    assert store.chunks[1].episode_instruction == ["reach goal 0", "reach goal 1", "reach goal 2"]
    assert store.to_dataset().episode_instruction == [f"reach goal {i}" for i in (0, 1, 2)] * 2
    with pytest.raises(DatasetError, match="episode_instruction"):
        EpisodeDataset(**{**ds.__dict__, "episode_instruction": ["only one"]}).validate()


def test_compact_rewrites_chunks_as_one_and_keeps_every_episode(tmp_path):
    from qtransformer.data import EpisodeStore, append_episodes
    from qtransformer.envs.builtin_dataset import make_builtin_dataset

    path = tmp_path / "d"
    parts = [make_builtin_dataset(1, 2, seed=s) for s in range(4)]
    for p in parts:
        assert append_episodes(path, p, reopen=False) is None  # an append reads meta.json only
    before = EpisodeStore.open(path)
    assert len(before.chunks) == 4
    whole = before.to_dataset()
    after = EpisodeStore.open(path).compact()
    assert len(after.chunks) == 1 and sorted((path / "chunks").iterdir()) == [path / "chunks" / after.meta["chunks"][0]]
    again = after.to_dataset()
    for k in ("observations", "actions", "rewards", "terminals", "timeouts", "episode_starts"):
        assert np.array_equal(getattr(again, k), getattr(whole, k))
    assert again.episode_source == whole.episode_source
    assert after.meta["num_episodes"] == 12 and after.meta["num_steps"] == whole.num_steps
    append_episodes(path, parts[0])  # appends go on after a compaction
    assert EpisodeStore.open(path).num_episodes == 15


def test_many_chunks_under_a_low_open_file_limit_are_refused_with_the_fix_then_compact(tmp_path):
    from qtransformer.data import append_episodes
    from qtransformer.envs.builtin_dataset import make_builtin_dataset

    path = tmp_path / "d"
    for s in range(30):
        append_episodes(path, make_builtin_dataset(1, 0, seed=s), reopen=False)
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))\n"
        "from qtransformer.data import EpisodeStore, DatasetError\n"
        "from qtransformer.cli import main\n"
        f"try:\n    EpisodeStore.open({str(path)!r})\nexcept DatasetError as e:\n    print('refused:', e)\n"
        f"assert main(['compact', {str(path)!r}]) == 0\n"
        f"print('open after compact:', EpisodeStore.open({str(path)!r}).num_episodes)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "qtransformer compact" in out.stdout  # 30 chunks x 5 files + room > 400
    assert "30 chunks -> 1" in out.stdout and "open after compact: 30" in out.stdout
