"""Online fine-tuning (finetune.py): the offline/online batch mix, the exploration schedule, what enters
the online data, restore vs fresh optimizer, resume after a kill, and the errors a user meets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from qtransformer.actions import ActionDiscretizer
from qtransformer.cli import main
from qtransformer.data import EpisodeStore, build_transitions
from qtransformer.data.batch import Batch, concat_batches
from qtransformer.data.sampler import MixedSampler
from qtransformer.envs.builtin_dataset import make_builtin_dataset
from qtransformer.finetune import FinetuneConfig, _fresh_like
from qtransformer.logging import read_metrics
from qtransformer.processor import episode_instructions


def _transitions(seed: int, demos: int = 3, autonomous: int = 3):
    ds = make_builtin_dataset(demos, autonomous, seed=seed)
    return ds, build_transitions(ds, ActionDiscretizer(ds.action_low, ds.action_high, 8), 0.98, 1)


def _row_set(obs: np.ndarray) -> set:
    return {tuple(np.round(r, 6)) for r in obs}


def test_mixed_batches_hold_the_set_share_of_online_rows():
    off_ds, offline = _transitions(0)
    on_ds, online = _transitions(1)
    off_rows, on_rows = _row_set(off_ds.observations), _row_set(on_ds.observations)
    assert not off_rows & on_rows  # the two datasets never share a state, so each row tells its side
    sampler = MixedSampler(offline, 64, "cpu", seed=3, online_fraction=0.25)
    first = sampler.sample()
    assert all(tuple(np.round(r, 6)) in off_rows for r in first.obs.numpy())  # no online episode yet: all offline
    sampler.set_online(online)
    assert sampler.split() == (48, 16)
    for _ in range(3):
        rows = sampler.sample().obs.numpy()
        assert all(tuple(np.round(r, 6)) in off_rows for r in rows[:48])
        assert all(tuple(np.round(r, 6)) in on_rows for r in rows[48:])
    again = MixedSampler(offline, 64, "cpu", seed=3, online_fraction=0.25)
    again.set_online(online)
    assert torch.equal(again.make_batch(2).obs, sampler.make_batch(2).obs)  # batch i: a function of (seed, i, data)

    only_online = MixedSampler(None, 32, "cpu", seed=0, online_fraction=0.5)
    assert not only_online.ready()
    with pytest.raises(ValueError, match="no finished online episode"):
        only_online.sample()
    only_online.set_online(online)
    assert only_online.split() == (0, 32)
    assert all(tuple(np.round(r, 6)) in on_rows for r in only_online.sample().obs.numpy())


def test_concat_batches_keeps_rows_in_order():
    def batch(v: float, n: int) -> Batch:
        f = torch.full((n,), v)
        return Batch(obs=torch.full((n, 2), v), bins=torch.zeros(n, 3, dtype=torch.long), reward=f, discount=f, bootstrap=f,
                     next_obs=torch.full((n, 2), v), mc_return=f, task=torch.zeros(n, dtype=torch.long))

    out = concat_batches([batch(1.0, 2), batch(2.0, 3)])
    assert out.obs[:, 0].tolist() == [1.0, 1.0, 2.0, 2.0, 2.0] and out.task.shape == (5,) and out.images is None


def test_epsilon_anneals_linearly():
    cfg = FinetuneConfig(checkpoint=Path("c"), env_steps=1000, epsilon_start=0.3, epsilon_end=0.1)
    assert [round(cfg.epsilon(s), 6) for s in (0, 250, 500, 2000)] == [0.3, 0.2, 0.1, 0.1]  # default span: half the steps
    cfg = FinetuneConfig(checkpoint=Path("c"), epsilon_start=0.5, epsilon_end=0.0, epsilon_anneal_steps=0)
    assert cfg.epsilon(0) == 0.0


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    data, run = root / "data", root / "run"
    assert main(["make-dataset", "builtin", "--demos", "6", "--autonomous", "10", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "30"]) == 0
    return data, run


def _finetune(run, out, *extra) -> int:
    return main(["finetune", "--checkpoint", str(run), "--out", str(out), "--no-progress", "--eval-episodes", "4", "--num-envs", "3", *extra])


def test_finetune_appends_finished_episodes_only(offline_run, tmp_path, capsys):
    data, run = offline_run
    out = tmp_path / "ft"
    # 3 environments x 40 rounds: PointReach3D episodes last at most 30 steps, so some are still running at the end.
    assert _finetune(run, out, "--env-steps", "120", "--eval-every", "60", "--log-every", "30") == 0
    store = EpisodeStore.open(out / "online")
    assert set(store.success_by_source()) == {"online"}
    assert 3 <= store.num_episodes and store.num_steps < 120  # episodes in flight at the end are not stored
    rows = read_metrics(out)
    last = [r for r in rows if "finetune/online_steps" in r][-1]
    assert last["finetune/online_steps"] == store.num_steps  # the learner's online transitions: finished episodes only
    evals = [r["step"] for r in rows if "eval/success_rate" in r]
    assert evals == [0, 60, 120]  # the start (the offline policy), every --eval-every, the end
    assert last["finetune/updates"] == 120  # one update per environment step
    assert main(["info", str(out / "online")]) == 0
    assert "| online | " in capsys.readouterr().out
    offline_state = json.loads((run / "checkpoints" / "step_00000030" / "training_state" / "state.json").read_text())
    state = json.loads((out / "checkpoints" / "step_00000120" / "training_state" / "state.json").read_text())
    assert state["num_updates"] == offline_state["num_updates"] + 120  # optimizer restored: its count goes on
    assert state["finetune"]["online_episodes"] == store.num_episodes
    assert len(store.chunks) == 1  # compacted at the checkpoint (one chunk per append otherwise)


def test_fresh_optimizer_starts_from_update_zero(offline_run, tmp_path):
    _, run = offline_run
    out = tmp_path / "fresh"
    assert _finetune(run, out, "--env-steps", "30", "--optimizer", "fresh", "--eval-episodes", "0", "--updates-per-step", "0.5") == 0
    state = json.loads((out / "checkpoints" / "step_00000030" / "training_state" / "state.json").read_text())
    assert state["num_updates"] == 15
    lr = [r["finetune/lr"] for r in read_metrics(out) if "finetune/lr" in r][0]
    assert lr < 3e-4  # the warm-up runs again (smoke preset: 5 steps)


def test_a_run_kept_without_its_training_state_starts_with_a_fresh_optimizer(offline_run, tmp_path, capsys):
    """bench.regime keeps only the model of a run's last checkpoint: such a run is still a start (its model,
    the dataset its config.json names, a fresh optimizer), not an 'incomplete checkpoint' error."""
    data, run = offline_run
    pruned = tmp_path / "pruned_run"
    shutil.copytree(run, pruned)
    shutil.rmtree(pruned / "checkpoints" / "step_00000030" / "training_state")
    out = tmp_path / "ft"
    assert _finetune(pruned, out, "--env-steps", "30", "--eval-episodes", "0", "--updates-per-step", "0.5") == 0
    assert "the optimizer starts fresh" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["start_optimizer"] == "fresh"
    assert Path(config["offline_dataset"]) == data  # from the training run's config.json
    assert config["start"] == str(pruned / "checkpoints" / "step_00000030" / "model")
    state = json.loads((out / "checkpoints" / "step_00000030" / "training_state" / "state.json").read_text())
    assert state["num_updates"] == 15  # counted from zero


def test_a_run_trained_on_a_relative_dataset_path_is_a_start_from_any_folder(offline_run, tmp_path, monkeypatch, capsys):
    """train records the dataset as an absolute path, so a model-only start finds it from another folder;
    a run recorded before (a relative path that is not there from here) gets a one-line error naming --dataset."""
    data, _ = offline_run
    monkeypatch.chdir(data.parent)
    run = tmp_path / "rel_run"
    assert main(["train", "--preset", "smoke", "--dataset", data.name, "--out", str(run), "--no-progress", "--steps", "30"]) == 0
    assert json.loads((run / "config.json").read_text())["dataset"] == str(data.resolve())
    shutil.rmtree(run / "checkpoints" / "step_00000030" / "training_state")
    monkeypatch.chdir(tmp_path)
    assert _finetune(run, tmp_path / "ft", "--env-steps", "30", "--eval-episodes", "0", "--updates-per-step", "0.5") == 0
    assert Path(json.loads((tmp_path / "ft" / "config.json").read_text())["offline_dataset"]) == data.resolve()

    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "dataset": data.name}))  # as runs before recorded it
    capsys.readouterr()
    assert _finetune(run, tmp_path / "ft2", "--env-steps", "30") == 2
    err = capsys.readouterr().err
    assert "field 'dataset' is 'data', relative to where `train` ran" in err and "--dataset" in err and len(err.strip().splitlines()) == 1


def test_from_scratch_keeps_shape_and_normaliser_only(make_net):
    from qt_testutils import tiny_model_config
    from qtransformer.config import to_dict

    net = make_net(6, 3, 8)
    with torch.no_grad():
        net.encoder.obs_mean.fill_(0.25)
    fresh = _fresh_like(net, {"model": to_dict(tiny_model_config())}, seed=1)
    assert torch.equal(fresh.encoder.obs_mean, net.encoder.obs_mean)  # the normaliser is kept
    assert fresh.head.weight.shape == net.head.weight.shape and not torch.equal(fresh.head.weight, net.head.weight)


def test_user_errors_are_one_line(offline_run, tmp_path, capsys):
    data, run = offline_run
    assert _finetune(run, tmp_path / "a", "--env-steps", "30", "--into", str(data)) == 2
    assert "is the offline dataset" in capsys.readouterr().err
    assert _finetune(run, tmp_path / "b", "--env-steps", "30", "--env", "metaworld:mt10") == 2
    assert "one task at a time" in capsys.readouterr().err
    out = tmp_path / "c"
    assert _finetune(run, out, "--env-steps", "30", "--eval-episodes", "0") == 0
    assert _finetune(run, out, "--env-steps", "30") == 2
    assert "--resume" in capsys.readouterr().err
    assert _finetune(run, out, "--env-steps", "60", "--resume", "--online-fraction", "0.9") == 2
    assert "online_fraction (saved 0.5, now 0.9)" in capsys.readouterr().err
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(out), "--resume", "--steps", "60"]) == 2
    assert "fine-tuning checkpoint" in capsys.readouterr().err
    evil = tmp_path / "evil"
    shutil.copytree(run, evil)
    config = evil / "checkpoints" / "step_00000030" / "model" / "config.json"
    config.write_text(config.read_text().replace('"qtransformer/PointReach3D-v0"', '"os:Evil-v0"'))
    assert _finetune(evil, tmp_path / "e", "--env-steps", "30") == 2
    assert "never import modules" in capsys.readouterr().err  # an id read from a file never imports a module
    bc = tmp_path / "bc"
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(bc), "--no-progress", "--steps", "5", "--algo.method", "bc"]) == 0
    assert _finetune(bc, tmp_path / "d", "--env-steps", "30") == 2
    assert "fine-tune a Q-Transformer checkpoint" in capsys.readouterr().err


def test_a_killed_finetune_leaves_the_data_readable_and_resumes(offline_run, tmp_path):
    _, run = offline_run
    out = tmp_path / "ft"
    base = ["finetune", "--checkpoint", str(run), "--out", str(out), "--no-progress", "--eval-episodes", "0", "--num-envs", "3"]
    assert main([*base, "--env-steps", "90", "--save-every", "45"]) == 0
    before = EpisodeStore.open(out / "online")
    pause = tmp_path / "paused"
    env = {**os.environ, "QTRANSFORMER_TEST_APPEND_PAUSE_FILE": str(pause), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "qtransformer", *base, "--env-steps", "180", "--resume"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not pause.exists():  # the resumed run wrote an episode chunk and waits before committing it
            assert proc.poll() is None and time.time() < deadline, "the fine-tuning run ended before its first append"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    after = EpisodeStore.open(out / "online")  # readable, exactly as before the uncommitted append
    assert after.num_episodes == before.num_episodes
    assert main([*base, "--env-steps", "180", "--resume"]) == 0
    final = EpisodeStore.open(out / "online")
    assert final.num_episodes > before.num_episodes and set(final.success_by_source()) == {"online"}
    assert (out / "checkpoints" / "last").read_text().strip() == "step_00000180"


def test_finetuning_a_run_with_a_prior_keeps_decoding_with_it(offline_run, tmp_path):
    """A start trained with --prior: the fine-tuned policy decodes with the same BC prior (its first
    evaluation is the offline policy's), and every fine-tuning checkpoint carries it, also after a resume
    that outlives the start's checkpoint; --from-scratch leaves it out."""
    from safetensors.torch import load_file

    from qtransformer.envs import BUILTIN_ENV_ID
    from qtransformer.evaluate import evaluate_policy
    from qtransformer.policy import QTPolicy

    data, _ = offline_run
    run = tmp_path / "offline"
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "30",
                 "--prior", "demonstration", "--prior-weight", "0.05", "--eval-episodes", "0"]) == 0
    out = tmp_path / "ft"
    base = ["--env-steps", "60", "--eval-every", "60", "--save-every", "20", "--keep-checkpoints", "1"]
    assert _finetune(run, out, *base) == 0
    assert main(["finetune", "--checkpoint", str(run), "--out", str(out), "--no-progress", "--eval-episodes", "4", "--num-envs", "3",
                 *base[2:], "--env-steps", "100", "--resume"]) == 0
    start, tuned = QTPolicy.from_checkpoint(run), QTPolicy.from_checkpoint(out)
    assert tuned.prior is not None and tuned.prior_weight == 0.05  # the start's --prior-weight
    carried = load_file(str(tuned.prior.model_dir / "model.safetensors"))
    for k, v in load_file(str(start.prior.model_dir / "model.safetensors")).items():
        assert torch.equal(carried[k], v), k
    first = [r for r in read_metrics(out) if "eval/success_rate" in r][0]
    assert first["step"] == 0 and first["eval/success_rate"] == evaluate_policy(start, BUILTIN_ENV_ID, 4)["success_rate"]
    assert _finetune(run, tmp_path / "scratch", "--env-steps", "20", "--eval-every", "20", "--from-scratch") == 0
    scratch = QTPolicy.from_checkpoint(tmp_path / "scratch")
    assert scratch.prior is None and "prior" not in scratch.meta  # from scratch: nothing learned offline, the prior included
    assert tuned.meta["prior"] == start.meta["prior"] == {"source": "demonstration", "weight": 0.05}


def test_finetuning_a_start_trained_with_the_prior_in_its_targets_keeps_it_there(offline_run, tmp_path, monkeypatch):
    """A start trained with --algo.prior-in-targets: fine-tuning's learner takes the carried prior into its
    TD targets too (at the start's --prior-weight, the decoding's); a start without it, and --from-scratch, get the plain maxima."""
    import qtransformer.finetune as ft

    seen = []
    real = ft.QTransformerLearner
    monkeypatch.setattr(ft, "QTransformerLearner", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    data, _ = offline_run
    run = tmp_path / "offline"
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "10",
                 "--prior", "demonstration", "--prior-weight", "0.05", "--algo.prior-in-targets", "--eval-episodes", "0"]) == 0
    assert _finetune(run, tmp_path / "ft", "--env-steps", "20", "--eval-every", "20") == 0
    assert seen[-1]["prior_net"] is not None and seen[-1]["prior_weight"] == 0.05  # the start's --prior-weight
    assert _finetune(run, tmp_path / "scratch", "--env-steps", "20", "--eval-every", "20", "--from-scratch") == 0
    assert seen[-1]["prior_net"] is None


def test_a_start_trained_with_a_source_mix_says_its_batch_rule_does_not_carry(offline_run, tmp_path, capsys):
    data, _ = offline_run
    run = tmp_path / "mixed_run"
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "10",
                 "--source-mix", "demonstration", "0.5"]) == 0
    capsys.readouterr()
    out = tmp_path / "ft"
    assert _finetune(run, out, "--env-steps", "6", "--eval-episodes", "0") == 0
    assert "trained with source_mix {'demonstration': 0.5}" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["start_batch_rules_not_applied"] == ["source_mix {'demonstration': 0.5}"]
    plain = tmp_path / "ft_plain"
    assert _finetune(offline_run[1], plain, "--env-steps", "6", "--eval-episodes", "0") == 0
    assert "do not apply" not in capsys.readouterr().out
    assert json.loads((plain / "config.json").read_text())["start_batch_rules_not_applied"] == []


def test_a_language_policy_finetunes_on_a_metaworld_task(tmp_path, capsys):
    """A MetaWorld reach dataset (its episodes carry instructions), a hashed-language policy, fine-tuned on
    metaworld:reach-v3 with its training instruction; an unknown instruction is refused in one line."""
    pytest.importorskip("metaworld")
    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "ft"
    assert main(["make-dataset", "metaworld", "--tasks", "reach-v3", "--demos", "1", "--autonomous", "1", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "5",
                 "--model.language-encoder", "hash"]) == 0
    instruction = episode_instructions(EpisodeStore.open(data))[0]
    capsys.readouterr()
    ft = ["finetune", "--checkpoint", str(run), "--no-progress", "--eval-episodes", "0", "--num-envs", "2", "--env", "metaworld:reach-v3",
          "--env-steps", "420", "--updates-per-step", "0.05"]
    assert main([*ft, "--out", str(out), "--instruction", instruction]) == 0
    online = EpisodeStore.open(out / "online")
    assert online.num_episodes == 2 and set(online.success_by_source()) == {"online"}  # two 200-step episodes ended
    assert set(episode_instructions(online)) == {instruction}
    assert main([*ft, "--out", str(tmp_path / "ft2"), "--instruction", "juggle three balls"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "juggle three balls" in err[0]
