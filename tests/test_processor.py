"""The one observation pipeline (processor.py): the same model inputs in training, evaluation and collection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qtransformer.actions import ActionDiscretizer
from qtransformer.checkpoint import load_model
from qtransformer.collect import COLLECT_SEED_OFFSET, collect
from qtransformer.config import apply_overrides, preset
from qtransformer.data import EpisodeStore, TransitionSampler, build_transitions
from qtransformer.envs import BUILTIN_IMAGE_ENV_ID
from qtransformer.envs.builtin_dataset import make_builtin_dataset
from qtransformer.evaluate import EVAL_SEED_OFFSET, evaluate_policy
from qtransformer.policy import QTPolicy
from qtransformer.processor import ObservationProcessor, split_observation, with_instructions
from qtransformer.train import train


def test_split_observation_one_rule_for_recording_and_acting():
    one = {"b": np.array([1.0, 2.0]), "a": np.array(3.0), "cam": np.full((4, 4, 3), 7, np.uint8)}
    state, images = split_observation(one)  # the recorder: cameras are the uint8 rank-3 entries
    assert state.tolist() == [3.0, 1.0, 2.0] and list(images) == ["cam"]  # other entries in sorted key order
    batch = {k: np.stack([v, v]) for k, v in one.items()}
    state_b, images_b = split_observation(batch, ["cam"])  # a model's processor, on a batch
    np.testing.assert_array_equal(state_b, np.stack([state, state]))
    assert images_b["cam"].shape == (2, 4, 4, 3)
    assert split_observation(np.zeros((2, 3)))[0].shape == (6,)  # recording flattens a plain array
    with pytest.raises(ValueError, match="lacks the image keys"):
        split_observation({"state": np.zeros(2)}, ["cam"])


@pytest.fixture(scope="module")
def image_language_run(tmp_path_factory):
    """A language policy (hash encoder) trained on the camera variant of the built-in task."""
    root = tmp_path_factory.mktemp("processor")
    EpisodeStore.create(root / "data", make_builtin_dataset(2, 2, seed=0, images=True, progress=False))
    cfg = apply_overrides(preset("smoke"), {
        "dataset": str(root / "data"), "out": str(root / "run"), "progress": False, "eval_episodes": 0, "steps": 4,
        "model": {"language_encoder": "hash"},
    })
    return root, train(cfg)


def test_the_processor_gives_the_same_inputs_in_training_evaluation_and_collection(image_language_run, tmp_path, monkeypatch):
    """Collect one greedy episode, evaluate greedily on the same reset seed, and train on what was
    collected: the inputs the network gets for each step are the same on all three paths."""
    _, final = image_language_run
    policy = QTPolicy.from_checkpoint(final)
    instruction = "reach the green square"  # not a training instruction: embedded on the fly
    seen: dict[str, list] = {"collect": [], "eval": []}
    path = ["collect"]
    model_inputs = policy.processor.model_inputs

    def spy(*args, **kwargs):
        x = model_inputs(*args, **kwargs)
        seen[path[0]].append(x)
        return x

    monkeypatch.setattr(policy.processor, "model_inputs", spy)
    collect(policy, tmp_path / "collected", 1, epsilon=0.0, instruction=instruction, progress=False)
    path[0] = "eval"
    evaluate_policy(policy, BUILTIN_IMAGE_ENV_ID, 1, seed=COLLECT_SEED_OFFSET - EVAL_SEED_OFFSET, instruction=instruction)

    store = EpisodeStore.open(tmp_path / "collected")
    assert store.chunks[0].episode_instruction == [instruction]  # collection records the text it acted on
    processor = ObservationProcessor.for_dataset(store, "hash")
    processor, table, step_ids = with_instructions(processor, store)  # as train() does
    transitions = build_transitions(store, ActionDiscretizer(store.action_low, store.action_high, 4), 0.9, 1)
    transitions["task"] = step_ids
    sampler = TransitionSampler(transitions, store.num_steps, "cpu", seed=0)
    sampler.indices = lambda i: np.arange(store.num_steps)  # every step, in order
    batch = sampler.make_batch(0)

    T = store.num_steps
    assert len(seen["collect"]) == len(seen["eval"]) == T
    for t, (c, e) in enumerate(zip(seen["collect"], seen["eval"], strict=True)):
        assert c.single and not e.single  # collection acts on one observation, evaluation on a batch of one
        for x in (c, e):
            torch.testing.assert_close(x.obs[0], batch.obs[t], rtol=0, atol=0)
            assert torch.equal(x.images["image"][0], batch.images["image"][t])
            torch.testing.assert_close(x.language[0], torch.from_numpy(table[batch.task[t]]), rtol=0, atol=0)
            assert x.task is None
    # the trained network's table holds the training instructions' embeddings from the same rule
    net, _, meta = load_model(final)
    train_processor = ObservationProcessor.from_dict(meta["processor"])
    assert train_processor.image_keys == ["image"] and train_processor.obs_dim == 6
    row = train_processor.instructions.index("move the point into the goal region")
    np.testing.assert_array_equal(net.language_table[row].numpy(), train_processor.embed(["move the point into the goal region"])[0])


def test_processor_settings_are_saved_with_the_checkpoint_and_read_back(image_language_run):
    _, final = image_language_run
    cfg = json.loads((final / "model" / "config.json").read_text())
    saved = cfg["processor"]
    assert saved["format_version"] == 1 and saved["language_encoder"] == "hash" and saved["image_keys"] == ["image"]
    assert saved["instructions"] == ["move the point into the goal region"]
    assert saved["task_instructions"] == {"reach": "move the point into the goal region"}
    policy = QTPolicy.from_checkpoint(final)
    assert policy.processor == ObservationProcessor.from_dict(saved)
    with pytest.raises(ValueError, match="field 'processor'"):
        ObservationProcessor.from_dict({**saved, "format_version": 99})
    with pytest.raises(ValueError, match="unknown entries"):
        ObservationProcessor.from_dict({**saved, "surprise": 1})


def test_a_checkpoint_from_before_the_processor_loads_and_acts_identically(make_net, tmp_path):
    from qt_testutils import tiny_model_config
    from qtransformer.checkpoint import model_config, save_model

    net = make_net(4, 3, 5, num_tasks=2, seed=1)
    disc = ActionDiscretizer([-1.0] * 3, [1.0] * 3, 5)
    cfg = model_config(net, disc, tiny_model_config(), {"task_names": ["a", "b"]})
    for key in ("language_dim", "num_instructions"):  # what config.json held before language conditioning
        del cfg[key]
    del cfg["model"]["language_encoder"]
    save_model(tmp_path / "model", net, cfg)
    assert not any("language" in k for k in net.state_dict())  # a model without language has no new weights
    policy = QTPolicy.from_checkpoint(tmp_path / "model")
    assert policy.processor.language_encoder == "none" and policy.processor.task_names == ["a", "b"]
    obs = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(policy.act(obs, task=1), QTPolicy(net, disc).act(obs, task=1))
    with pytest.raises(ValueError, match="without language"):
        policy.act(obs, task=1, instruction="open the drawer")
