"""Image observations end to end: the store, the next-image rule, the network, the learner, the policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qt_testutils import tiny_model_config
from qtransformer.actions import ActionDiscretizer
from qtransformer.algo import QTransformerLearner
from qtransformer.config import AlgoConfig, apply_overrides, preset
from qtransformer.data import Batch, DatasetError, EpisodeDataset, EpisodeStore, TransitionSampler, build_transitions
from qtransformer.envs import BUILTIN_IMAGE_ENV_ID
from qtransformer.envs.builtin_dataset import make_builtin_dataset
from qtransformer.evaluate import evaluate_policy
from qtransformer.nets import QTransformerNet
from qtransformer.policy import QTPolicy, decode
from qtransformer.train import train


def labelled_image_dataset():
    """Two episodes whose images are filled with a step label, so gathered images tell their step."""
    eps = []
    for e, T in enumerate((3, 2)):
        obs = np.zeros((T + 1, 2), np.float32)
        labels = np.arange(T + 1) + 10 * (e + 1)  # episode 0: 10, 11, 12, 13; episode 1: 20, 21, 22
        img = np.broadcast_to(labels[:, None, None, None], (T + 1, 8, 8, 3)).astype(np.uint8)
        eps.append({
            "observations": obs[:-1], "next_observations": obs[1:], "actions": np.zeros((T, 2), np.float32),
            "rewards": np.zeros(T, np.float32), "terminals": np.zeros(T, bool), "timeouts": np.eye(T, dtype=bool)[-1],
            "source": "autonomous", "images": {"cam": img[:-1]}, "final_images": {"cam": img[-1]},
        })
    return EpisodeDataset.from_episodes(eps, [-1, -1], [1, 1])


def test_store_maps_images_and_the_next_image_of_a_last_step_is_the_final_image(tmp_path):
    ds = labelled_image_dataset()
    store = EpisodeStore.create(tmp_path / "d", ds)
    store = store.append(labelled_image_dataset())  # a second chunk
    assert isinstance(store.chunks[1].images["cam"], np.memmap) and store.image_shapes == {"cam": (8, 8, 3)}
    tr = build_transitions(store, ActionDiscretizer([-1, -1], [1, 1], 4), gamma=0.9, n_step=2)
    sampler = TransitionSampler(tr, 64, "cpu", seed=0)
    batch = sampler.make_batch(0)
    now = batch.images["cam"][:, 0, 0, 0].tolist()
    nxt = batch.next_images["cam"][:, 0, 0, 0].tolist()
    # n = 2: the bootstrap image is two steps on, or the episode's final image (labels 13 and 22)
    expected = {10: 12, 11: 13, 12: 13, 20: 22, 21: 22}
    assert all(expected[a] == b for a, b in zip(now, nxt, strict=True)) and set(now) == set(expected)


def test_images_must_be_uint8_with_matching_shapes():
    ds = labelled_image_dataset()
    with pytest.raises(DatasetError, match="images/cam"):
        EpisodeDataset(**{**ds.__dict__, "images": {"cam": ds.images["cam"].astype(np.float32)}}).validate()
    with pytest.raises(DatasetError, match="final_images/cam"):
        EpisodeDataset(**{**ds.__dict__, "final_images": {"cam": ds.final_images["cam"][:1]}}).validate()


def make_image_net(seed=0, obs_dim=2):
    torch.manual_seed(seed)
    return QTransformerNet(obs_dim, 3, 5, 1, tiny_model_config(), image_shapes={"cam": (16, 16, 3)})


def test_image_tokens_are_read_causally_and_cached_decoding_matches():
    net = make_image_net().eval()
    g = torch.Generator().manual_seed(0)
    obs, images = torch.randn(6, 2, generator=g), {"cam": torch.randint(0, 256, (6, 16, 16, 3), generator=g, dtype=torch.uint8)}
    bins = torch.randint(0, 5, (6, 3), generator=g)
    with torch.no_grad():
        v = net(obs, bins, images=images)
        other = {"cam": torch.randint(0, 256, (6, 16, 16, 3), generator=g, dtype=torch.uint8)}
        assert (net(obs, bins, images=other) - v).abs().max() > 1e-4  # the image matters
        changed = bins.clone()
        changed[:, 1:] = (changed[:, 1:] + 1) % 5
        torch.testing.assert_close(net(obs, changed, images=images)[:, :2], v[:, :2])  # dim j sees bins < j only
    a = decode(net, obs, images=images, use_cache=True)
    b = decode(net, obs, images=images, use_cache=False)
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    with pytest.raises(ValueError, match="images"):
        net(obs, bins)


def test_every_parameter_of_an_image_model_moves_after_one_update():
    net = make_image_net()
    learner = QTransformerLearner(net, AlgoConfig(num_bins=5, warmup_steps=0, weight_decay=0.0), "cpu")
    before = [p.detach().clone() for p in learner.online.parameters()]
    g = torch.Generator().manual_seed(1)
    B = 8
    batch = Batch(
        obs=torch.randn(B, 2, generator=g), bins=torch.randint(0, 5, (B, 3), generator=g),
        reward=torch.rand(B, generator=g), discount=torch.full((B,), 0.9), bootstrap=torch.ones(B),
        next_obs=torch.randn(B, 2, generator=g), mc_return=torch.rand(B, generator=g),
        images={"cam": torch.randint(0, 256, (B, 16, 16, 3), generator=g, dtype=torch.uint8)},
        next_images={"cam": torch.randint(0, 256, (B, 16, 16, 3), generator=g, dtype=torch.uint8)},
    )
    learner.update(batch)
    names = [n for n, _ in learner.online.named_parameters()]
    for name, b, a in zip(names, before, learner.online.parameters(), strict=True):
        assert not torch.equal(a, b), name
    assert any(n.startswith("image_encoders.0.conv") for n in names)


def test_train_and_act_on_the_camera_variant_of_the_builtin_task(tmp_path):
    EpisodeStore.create(tmp_path / "data", make_builtin_dataset(3, 3, seed=0, images=True, progress=False))
    cfg = apply_overrides(preset("smoke"), {"dataset": tmp_path / "data", "out": tmp_path / "run", "progress": False, "steps": 6, "eval_episodes": 2})
    final = train(cfg)
    policy = QTPolicy.from_checkpoint(final)
    assert policy.net.image_keys == ["image"] and policy.env_id == BUILTIN_IMAGE_ENV_ID
    import gymnasium as gym

    obs, _ = gym.make(BUILTIN_IMAGE_ENV_ID).reset(seed=0)
    single = policy.act(obs)
    batch = policy.act({k: np.stack([v, v]) for k, v in obs.items()})
    assert single.shape == (3,) and batch.shape == (2, 3)
    np.testing.assert_array_equal(batch[0], single)
    with pytest.raises(ValueError, match="images"):
        policy.act(obs["state"])
    result = evaluate_policy(policy, None, episodes=2)
    assert result["episodes"] == 2 and result["env_id"] == BUILTIN_IMAGE_ENV_ID
