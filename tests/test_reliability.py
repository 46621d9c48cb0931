"""Bad inputs and failures that must end in one clear error and lose no data (issue 16).

The inputs come from tests/bad_inputs.py, which writes each one into the test's tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import bad_inputs
from qt_testutils import tiny_model_config
from qtransformer.config import AlgoConfig, TrainConfig
from qtransformer.data import Batch, DatasetError
from qtransformer.train import TrainingDiverged, train


def tiny_cfg(dataset, out, steps=20, **overrides):
    cfg = TrainConfig(
        dataset=dataset, out=out, steps=steps, batch_size=8, device="cpu", seed=0, log_every=1, eval_every=0,
        eval_episodes=0, save_every=10, keep_checkpoints=1, progress=False, prefetch=0,
        model=tiny_model_config(), algo=AlgoConfig(num_bins=8, warmup_steps=1),
    )
    return dataclasses.replace(cfg, **overrides)


def all_finite(ckpt) -> bool:
    files = [ckpt / "model" / "model.safetensors", *(ckpt / "training_state").glob("*.safetensors")]
    return all(bool(torch.isfinite(t).all()) for f in files for t in load_file(str(f)).values() if t.is_floating_point())


# -- 1. a non-finite loss stops training ----------------------------------------------------------------
def test_a_diverging_run_stops_with_a_diagnosis_and_keeps_its_last_healthy_checkpoint(tmp_path):
    data, run = bad_inputs.good_dataset(tmp_path), tmp_path / "run"
    cfg = tiny_cfg(data, run, steps=300, save_every=2, algo=AlgoConfig(num_bins=8, warmup_steps=1, lr=1000.0))
    with pytest.raises(TrainingDiverged) as info:
        train(cfg)
    msg = str(info.value)
    assert "\n" not in msg and "went non-finite first" in msg and "learning rate is too high" in msg and "--algo.lr" in msg
    step = int(msg.split("training stopped at step ")[1].split(":")[0])
    last = (run / "checkpoints" / "last").read_text().strip()
    assert int(last.split("_")[1]) < step and f"{last} is kept" in msg
    for ckpt in (run / "checkpoints").glob("step_*"):
        assert all_finite(ckpt), ckpt
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if k.startswith("train/"))


def test_the_learner_skips_a_non_finite_update_and_names_the_first_non_finite_quantity(make_net):
    from qtransformer.algo import QTransformerLearner

    net = make_net(3, 2, 8)
    learner = QTransformerLearner(net, AlgoConfig(num_bins=8, warmup_steps=1), torch.device("cpu"))
    B = 4
    batch = Batch(obs=torch.randn(B, 3), bins=torch.randint(8, (B, 2)), reward=torch.zeros(B), discount=torch.full((B,), 0.9),
                  bootstrap=torch.ones(B), next_obs=torch.randn(B, 3), mc_return=torch.zeros(B))
    bad = dataclasses.replace(batch, obs=batch.obs.clone())
    bad.obs[1, 2] = float("nan")
    before = {k: v.clone() for k, v in learner.online.state_dict().items()}
    metrics = learner.update(bad)
    assert not math.isfinite(metrics["loss"]) and learner.num_updates == 0
    for k, v in learner.online.state_dict().items():
        assert torch.equal(v, before[k]), k  # not stepped
    assert learner.find_nonfinite(bad) == ("batch inputs", "batch field 'obs'")
    with torch.no_grad():
        next(learner.online.parameters())[0].fill_(float("inf"))
    assert learner.find_nonfinite(batch)[0] == "parameters" and learner.nonfinite_state().startswith("online parameter")


# -- 4. values in chunk files are checked at training start ---------------------------------------------
@pytest.mark.parametrize("field, value, what", [
    ("observations", np.nan, "NaN or inf"), ("next_observations", np.inf, "NaN or inf"), ("rewards", -np.inf, "NaN or inf"),
    ("rewards", 2.0, "outside [0, 1]"), ("actions", np.nan, "NaN or inf"), ("actions", 5.0, "outside the dataset's bounds"),
])
def test_training_refuses_bad_values_in_a_chunk_naming_file_episode_and_step(tmp_path, field, value, what):
    data = bad_inputs.chunk_value(tmp_path, field, row=8, value=value)  # episode 0 has 6 steps: row 8 is episode 1, step 2
    with pytest.raises(DatasetError) as info:
        train(tiny_cfg(data, tmp_path / "run"))
    msg = str(info.value)
    assert f"chunks/000000/{field}.npy: episode 1 (episode 1 of this chunk), step 2, field '{field}'" in msg and what in msg
    assert not (tmp_path / "run").exists()


# -- 2. creating the same new dataset from several processes at once -------------------------------------
def test_processes_creating_the_same_new_dataset_at_once_keep_every_episode(tmp_path):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from qtransformer.data import EpisodeStore

    paths, go = [tmp_path / f"new{i}" for i in range(2)], tmp_path / "go"
    tests_dir = str(Path(__file__).parent)
    script = (
        "import os, sys, time\n"
        f"sys.path.insert(0, {tests_dir!r})\n"
        "import bad_inputs\n"
        "import qtransformer.data.store as store\n"
        "from qtransformer.data import append_episodes\n"
        "write = store._write_chunk\n"
        "store._write_chunk = lambda *a: (time.sleep(0.2), write(*a))  # a slow disk: creations surely overlap\n"
        "ds = bad_inputs.good_episodes(n=int(sys.argv[1]), seed=int(sys.argv[1]))\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.001)\n"
        f"for path in {[str(p) for p in paths]!r}:\n"
        "    append_episodes(path, ds)\n"
    )
    counts = [5, 6, 7]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)], env={**os.environ, "OMP_NUM_THREADS": "1"}) for n in counts]
    time.sleep(0.5)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    for path in paths:
        store = EpisodeStore.open(path)
        assert store.num_episodes == sum(counts) and sorted(len(c.episode_source) for c in store.chunks) == counts


def test_appending_into_a_folder_that_is_not_a_dataset_is_refused_and_touches_nothing(tmp_path):
    from qtransformer.data import append_episodes

    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a dataset folder"):
        append_episodes(folder, bad_inputs.good_episodes())
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


# -- 3. an environment id read from a file never imports a module ---------------------------------------
def test_an_env_id_from_meta_json_never_imports_a_module(tmp_path, monkeypatch, capsys):
    from qtransformer.cli import main

    env_id, marker = bad_inputs.module_env_id(tmp_path, "qt_evil_meta")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = bad_inputs.meta_fields(tmp_path, env_id=env_id)
    args = ["train", "--preset", "smoke", "--dataset", str(data), "--out", str(tmp_path / "run"), "--no-progress", "--eval-episodes", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "meta.json: field 'env_id'" in err and f"--eval-env {env_id}" in err
    assert not marker.exists() and not (tmp_path / "run").exists()
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"eval_env": env_id}))
    assert main([*args[:-2], "--config", str(config)]) == 2
    assert "cfg.json: field 'eval_env'" in capsys.readouterr().err and not marker.exists()


def test_an_env_id_from_a_checkpoint_never_imports_a_module_unless_given_on_the_command_line(tmp_path, monkeypatch, capsys):
    from qtransformer.cli import main

    env_id, marker = bad_inputs.module_env_id(tmp_path, "qt_evil_ckpt")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    train(tiny_cfg(bad_inputs.good_dataset(tmp_path), run, steps=2))
    bad_inputs.model_config_fields(run, env_id=env_id)
    for command in (["eval", "--checkpoint", str(run), "--episodes", "1"], ["collect", "--checkpoint", str(run), "--into", str(tmp_path / "new")]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "config.json: field 'env_id'" in err and f"--env {env_id}" in err
        assert not marker.exists()
    assert main(["eval", "--checkpoint", str(run), "--episodes", "1", "--env", env_id]) == 2  # the user's own choice: imported
    assert marker.exists()


# -- 5. size limits -------------------------------------------------------------------------------------
def test_an_absurd_model_size_is_refused_before_anything_is_allocated(tmp_path):
    from qtransformer.config import ConfigError, ModelConfig

    data = bad_inputs.good_dataset(tmp_path)
    with pytest.raises(ConfigError, match=r"model: d_model=10000000.*GiB.*lower model.d_model"):
        train(tiny_cfg(data, tmp_path / "run", model=ModelConfig(d_model=10_000_000, n_heads=1)))
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_config_with_an_absurd_model_is_refused(tmp_path):
    from qtransformer.checkpoint import CheckpointError, load_model

    run = tmp_path / "run"
    train(tiny_cfg(bad_inputs.good_dataset(tmp_path), run, steps=2))
    path = bad_inputs.model_config_fields(run, obs_dim=10**12)
    with pytest.raises(CheckpointError, match=r"config.json: model: .*obs_dim=1000000000000.*GiB"):
        load_model(run)
    for bad in (5, {"d_model": "wide"}):
        bad_inputs.model_config_fields(run, obs_dim=3, model=bad)
        with pytest.raises(CheckpointError, match="config.json: missing or invalid field"):
            load_model(run)
    assert path.exists()


def test_a_batch_larger_than_the_dataset_is_refused(tmp_path):
    from qtransformer.config import ConfigError

    data = bad_inputs.good_dataset(tmp_path)  # 4 episodes, 27 steps
    with pytest.raises(ConfigError, match=r"batch_size: 100000 is far larger than the dataset's 27 transitions .*--batch-size to at most 1024"):
        train(tiny_cfg(data, tmp_path / "run", batch_size=100_000))


# -- 6. every failure of the command line is one line naming the file or field and the fix -------------
@pytest.fixture
def run_and_data(tmp_path):
    data, run = bad_inputs.good_dataset(tmp_path), tmp_path / "run"
    train(tiny_cfg(data, run, steps=2))
    return run, data


def one_line_error(capsys, argv, code=2):
    from qtransformer.cli import main

    assert main(argv) == code
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"qtransformer {argv[0]}: error: "), captured.err
    return err[0], captured.out


def test_a_meta_json_that_is_a_folder_or_not_utf8_or_nested_too_deeply_is_one_line(tmp_path, capsys):
    for name, make in (("folder", bad_inputs.meta_is_folder), ("utf8", bad_inputs.meta_not_utf8)):
        path = make(tmp_path / name)
        err, _ = one_line_error(capsys, ["train", "--preset", "smoke", "--dataset", str(path), "--out", str(tmp_path / "r")])
        assert f"{path / 'meta.json'}:" in err
    nested = bad_inputs.good_dataset(tmp_path / "nested")
    bad_inputs.deeply_nested_json(nested / "meta.json")
    err, _ = one_line_error(capsys, ["info", str(nested)])
    assert "meta.json: nested too deeply" in err


@pytest.mark.parametrize("content, words", [
    ({"dataset": 5}, "field 'dataset' must be a path"),
    ({"source_mix": {"demonstration": "half"}}, "field 'source_mix.demonstration' must be a number"),
    ({"model": 5}, "field 'model' must be a mapping"),
    ({"eval_env": 5}, "field 'eval_env' must be a string"),
    (None, "nested too deeply"),
])
def test_bad_config_files_are_one_line_naming_the_field(tmp_path, capsys, content, words):
    config = tmp_path / "cfg.json"
    if content is None:
        bad_inputs.deeply_nested_json(config)
    else:
        config.write_text(json.dumps(content))
    err, _ = one_line_error(capsys, ["train", "--preset", "smoke", "--dataset", str(tmp_path), "--config", str(config)])
    assert "cfg.json" in err and words in err


def test_a_source_mix_fraction_out_of_range_is_refused():
    from qtransformer.config import ConfigError

    with pytest.raises(ConfigError, match=r"source_mix\['demonstration'\]: must be a fraction"):
        TrainConfig(source_mix={"demonstration": 1.5})


def test_an_out_folder_that_is_a_file_or_not_writable_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    data = bad_inputs.good_dataset(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    err, _ = one_line_error(capsys, ["train", "--preset", "smoke", "--dataset", str(data), "--out", str(afile)])
    assert "--out names a file" in err and afile.read_text() == "mine"
    err, _ = one_line_error(capsys, ["train", "--preset", "smoke", "--dataset", str(data), "--out", str(afile / "run")])
    assert "which is a file" in err
    import os

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as on a read-only file system
    err, _ = one_line_error(capsys, ["train", "--preset", "smoke", "--dataset", str(data), "--out", str(tmp_path / "run")])
    assert "not writable" in err and not (tmp_path / "run").exists()


def test_eval_out_naming_a_folder_is_refused_before_the_evaluation(run_and_data, tmp_path, capsys, monkeypatch):
    import qtransformer.evaluate

    run, _ = run_and_data
    monkeypatch.setattr(qtransformer.evaluate, "evaluate_policy", lambda *a, **k: pytest.fail("the evaluation ran"))
    err, _ = one_line_error(capsys, ["eval", "--checkpoint", str(run), "--episodes", "1", "--out", str(tmp_path)])
    assert "--out names a folder" in err and "result.json" in err


def test_collect_into_a_read_only_dataset_is_refused_before_collecting(run_and_data, capsys, monkeypatch):
    import os

    import qtransformer.collect

    run, data = run_and_data
    meta = (data / "meta.json").read_text()
    monkeypatch.setattr(qtransformer.collect, "rollout", lambda *a, **k: pytest.fail("episodes were collected"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path).startswith(str(data)) else real_access(path, mode))
    err, _ = one_line_error(capsys, ["collect", "--checkpoint", str(run), "--into", str(data), "--episodes", "1"])
    assert "not writable" in err and (data / "meta.json").read_text() == meta


def test_a_full_disk_during_a_checkpoint_is_one_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import qtransformer.checkpoint
    from qtransformer.checkpoint import CheckpointError

    data, run = bad_inputs.good_dataset(tmp_path), tmp_path / "run"
    real_save, calls = qtransformer.checkpoint.save_file, []

    def save_file(tensors, path):
        calls.append(path)
        if "step_00000004" in path:  # the second checkpoint (its temporary folder is named after it): the disk is full
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })")
        real_save(tensors, path)

    monkeypatch.setattr(qtransformer.checkpoint, "save_file", save_file)
    with pytest.raises(CheckpointError) as info:
        train(tiny_cfg(data, run, steps=6, save_every=2, keep_checkpoints=1))
    msg = str(info.value)
    assert "cannot write the checkpoint (SafetensorError" in msg and "step_00000002 is intact" in msg and "--resume" in msg
    assert (run / "checkpoints" / "last").read_text().strip() == "step_00000002"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last", "step_00000002"]  # no temporary folder left


def test_an_os_error_or_an_unexpected_error_is_one_line(tmp_path, capsys, monkeypatch):
    import qtransformer.cli

    def denied(argv):
        raise PermissionError(13, "Permission denied", str(tmp_path / "meta.json"))

    monkeypatch.setattr(qtransformer.cli, "cmd_info", denied)
    err, _ = one_line_error(capsys, ["info", str(tmp_path)])
    assert f"{tmp_path / 'meta.json'}: Permission denied" in err

    def bug(argv):
        raise KeyError("oops")

    monkeypatch.setattr(qtransformer.cli, "cmd_info", bug)
    err, _ = one_line_error(capsys, ["info", str(tmp_path)], code=1)
    assert "unexpected KeyError" in err and "QTRANSFORMER_TRACEBACK=1" in err


# -- 7 and 10. meta.json fields are checked before anything is read by them -----------------------------
@pytest.mark.parametrize("fields, words", [
    ({"chunks": ["000000", "000000"]}, "lists the chunk 000000 twice"),
    ({"chunks": ["../../other/chunks/000000"]}, "not a chunk name"),
    ({"chunks": ["/etc"]}, "not a chunk name"),
    ({"chunks": "000000"}, "must be a list"),
    ({"action_low": "abc"}, "field 'action_low' must be a list of 2 numbers"),
    ({"action_low": [1, 1]}, "high > low"),
    ({"obs_dim": 10**12}, "field 'obs_dim' must be a whole number"),
    ({"obs_dim": 1e12}, "field 'obs_dim' must be a whole number"),
    ({"task_names": []}, "field 'task_names'"),
    ({"image_shapes": {"../cam": [2, 2, 3]}}, "field 'image_shapes'"),
])
def test_bad_meta_json_fields_are_refused_naming_the_file_and_field(tmp_path, fields, words):
    from qtransformer.data import EpisodeStore

    path = bad_inputs.meta_fields(tmp_path, **fields)
    with pytest.raises(DatasetError) as info:
        EpisodeStore.open(path)
    assert str(info.value).startswith(f"{path / 'meta.json'}: ") and words in str(info.value)


def test_an_append_never_deletes_a_chunk_it_does_not_own(tmp_path):
    from qtransformer.data import EpisodeStore, append_episodes

    first, other = bad_inputs.chunks_outside(tmp_path)
    with pytest.raises(DatasetError, match="not a chunk name"):
        append_episodes(first, bad_inputs.good_episodes())
    assert (first / "chunks" / "000000").is_dir() and EpisodeStore.open(other).num_episodes == 4
    # a folder of the user's in chunks/ that is no chunk name is left alone; an uncommitted chunk is removed
    good = bad_inputs.good_dataset(tmp_path, "good")
    (good / "chunks" / "notes").mkdir()
    (good / "chunks" / "000007").mkdir()
    append_episodes(good, bad_inputs.good_episodes())
    assert sorted(p.name for p in (good / "chunks").iterdir()) == ["000000", "000001", "notes"]


# -- 8. a Dict observation without images ---------------------------------------------------------------
def test_train_and_eval_on_a_dict_observation_without_images(tmp_path):
    from qtransformer.data import EpisodeDataset, EpisodeStore
    from qtransformer.envs import make_env
    from qtransformer.envs.rollout import rollout
    from qtransformer.evaluate import evaluate_policy
    from qtransformer.policy import QTPolicy

    env_id = bad_inputs.register_dict_goal_env()
    env = make_env(env_id)
    rng = np.random.default_rng(0)
    eps = [dict(rollout(env, lambda obs: rng.uniform(-1, 1, 2).astype(np.float32), seed=s), source="autonomous") for s in range(6)]
    data = tmp_path / "ds"
    EpisodeStore.create(data, EpisodeDataset.from_episodes(eps, [-1, -1], [1, 1], env_id=env_id))
    assert EpisodeStore.open(data).obs_dim == 10 and EpisodeStore.open(data).image_shapes == {}
    run = tmp_path / "run"
    final = train(tiny_cfg(data, run, steps=2, eval_episodes=2))  # the final evaluation steps the Dict environment
    assert json.loads((run / "eval_info.json").read_text())["episodes"] == 2
    policy = QTPolicy.from_checkpoint(final)
    obs, _ = env.reset(seed=1)
    assert policy.act(obs).shape == (2,)
    assert evaluate_policy(policy, None, 3)["episodes"] == 3


def test_a_task_id_for_a_single_task_policy_or_out_of_range_is_refused(run_and_data, capsys):
    run, _ = run_and_data
    err, _ = one_line_error(capsys, ["eval", "--checkpoint", str(run), "--episodes", "1", "--task", "7"])
    assert "--task 7: this policy was trained on a single task" in err and "drop --task" in err


def test_a_task_id_outside_a_multi_task_policy_is_refused(make_net):
    from qtransformer.actions import ActionDiscretizer
    from qtransformer.policy import QTPolicy

    policy = QTPolicy(make_net(3, 2, 8, num_tasks=3), ActionDiscretizer([-1, -1], [1, 1], 8), {"task_names": ["a", "b", "c"]})
    assert policy.task_for_env("E-v0", 2) == 2
    with pytest.raises(ValueError, match="--task 3: this policy was trained on 3 tasks"):
        policy.task_for_env("E-v0", 3)


# -- 10. smaller ones ----------------------------------------------------------------------------------
def test_stale_temporary_checkpoint_folders_are_removed(tmp_path):
    data, run = bad_inputs.good_dataset(tmp_path), tmp_path / "run"
    stale = run / "checkpoints" / ".step_00000005.tmp-k1ll3d"
    (stale / "model").mkdir(parents=True)
    (run / "checkpoints" / ".last.tmp-4242").write_text("step_00000005\n")
    (run / "checkpoints" / "notes.txt").write_text("mine")
    train(tiny_cfg(data, run, steps=2))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last", "notes.txt", "step_00000002"]


def test_datasets_and_checkpoints_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from qtransformer.data import append_episodes

    old = os.umask(0o022)
    try:
        data, run = bad_inputs.good_dataset(tmp_path), tmp_path / "run"
        appended = append_episodes(tmp_path / "new", bad_inputs.good_episodes()).path
        append_episodes(appended, bad_inputs.good_episodes())
        train(tiny_cfg(data, run, steps=2))
    finally:
        os.umask(old)
    ckpt = run / "checkpoints" / "step_00000002"
    for folder in (data, data / "chunks" / "000000", appended, appended / "chunks" / "000001", ckpt, ckpt / "model"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    for f in (data / "meta.json", data / "chunks" / "000000" / "observations.npy", ckpt / "model" / "model.safetensors"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


@pytest.mark.parametrize("pointer", ["ABSOLUTE", "../../other/checkpoints/step_00000002", "step_00000002/../../../other/checkpoints/step_00000002"])
def test_a_last_pointer_outside_the_run_is_refused(tmp_path, capsys, pointer):
    data = bad_inputs.good_dataset(tmp_path)
    run, other = tmp_path / "run", tmp_path / "other"
    train(tiny_cfg(data, run, steps=2))
    train(tiny_cfg(data, other, steps=2, seed=1))
    text = str(other / "checkpoints" / "step_00000002") if pointer == "ABSOLUTE" else pointer
    bad_inputs.last_pointer(run, text)
    for argv in (["eval", "--checkpoint", str(run), "--episodes", "1"], ["info", str(run)]):
        err, _ = one_line_error(capsys, argv)
        assert "checkpoints/last: names" in err and "never a path" in err
    from qtransformer.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="never a path"):
        train(tiny_cfg(data, run, steps=4, resume=True))


def test_make_dataset_and_collect_refuse_a_bad_output_before_making_episodes(run_and_data, tmp_path, capsys, monkeypatch):
    import qtransformer.collect
    import qtransformer.envs.builtin_dataset

    run, _ = run_and_data
    monkeypatch.setattr(qtransformer.envs.builtin_dataset, "make_builtin_dataset", lambda *a, **k: pytest.fail("episodes were made"))
    monkeypatch.setattr(qtransformer.collect, "rollout", lambda *a, **k: pytest.fail("episodes were collected"))
    afile, folder = tmp_path / "afile", tmp_path / "mine"
    afile.write_text("x")
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    for argv, words in [
        (["make-dataset", "builtin", "--out", str(afile)], "--out names a file"),
        (["make-dataset", "builtin", "--out", str(afile / "ds")], "which is a file"),
        (["make-dataset", "builtin", "--out", str(folder)], "not a dataset folder"),
        (["collect", "--checkpoint", str(run), "--into", str(folder)], "not a dataset folder"),
        (["collect", "--checkpoint", str(run), "--into", str(afile)], "--into names a file"),
    ]:
        err, _ = one_line_error(capsys, argv)
        assert words in err, argv
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
