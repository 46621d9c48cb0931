"""Image encoders (nets/vision.py): FiLM, TokenLearner, EfficientNet with torchvision's layout, and the
network and CLI around them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qt_testutils import tiny_model_config
from qtransformer.cli import main
from qtransformer.nets import QTransformerNet
from qtransformer.nets.vision import EfficientNetFeatures, FiLM, ImageEncoder, TokenLearner, load_efficientnet_weights
from qtransformer.policy import QTPolicy, decode


def test_film_starts_as_the_identity_and_zero_conditioning_keeps_it():
    film = FiLM(5, 3)
    x, c = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    assert torch.equal(film(x, c), x)  # gamma = beta = 0 at initialisation, whatever the condition
    with torch.no_grad():
        film.proj.weight.normal_()
    assert torch.equal(film(x, torch.zeros(2, 5)), x)  # no bias: a zero condition changes nothing
    assert not torch.allclose(film(x, c), x)
    with torch.no_grad():  # by hand: gamma = 1 on channel 0, beta = 2 on channel 1
        film.proj.weight.zero_()
        film.proj.bias.copy_(torch.tensor([1.0, 0, 0, 0, 2.0, 0]))
    y = film(x, c)
    assert torch.allclose(y[:, 0], 2 * x[:, 0]) and torch.allclose(y[:, 1], x[:, 1] + 2) and torch.equal(y[:, 2], x[:, 2])


def test_token_learner_shapes_and_a_hand_computed_case():
    tl = TokenLearner(6, 3)
    assert tl(torch.randn(2, 6, 5, 7)).shape == (2, 3, 6)
    with torch.no_grad():  # attention logits 0 everywhere: every map is 1/2, so every token is half the spatial mean
        for p in tl.parameters():
            p.zero_()
    x = torch.randn(1, 6, 2, 2)
    assert torch.allclose(tl(x), 0.5 * x.mean((2, 3))[:, None, :].expand(1, 3, 6))


def test_efficientnet_has_torchvision_sizes_and_names():
    b0 = EfficientNetFeatures("film-efficientnet-b0")
    # torchvision's efficientnet_b0 / b3 without their classifiers: 5,288,548 - 1,281,000 and 12,233,232 - 1,537,000
    assert sum(p.numel() for p in b0.features.parameters()) == 4_007_548 and b0.out_channels == 1280
    assert sum(p.numel() for p in EfficientNetFeatures("film-efficientnet-b3").features.parameters()) == 10_696_232
    names = set(b0.state_dict())
    for name in ("features.0.0.weight", "features.0.1.running_var", "features.1.0.block.1.fc1.weight", "features.2.0.block.0.0.weight",
                 "features.2.0.block.3.1.bias", "features.8.0.weight"):
        assert name in names


def test_film_efficientnet_at_start_equals_the_plain_one():
    torch.manual_seed(0)
    film = EfficientNetFeatures("film-efficientnet-b0", cond_dim=4).eval()
    plain = EfficientNetFeatures("film-efficientnet-b0").eval()
    plain.load_state_dict({k: v for k, v in film.state_dict().items() if k.startswith("features.")})
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(film(x, torch.randn(2, 4)), plain(x), atol=1e-6)


def test_encoder_tokens_and_weight_loading(tmp_path):
    for kind in ("cnn", "film-efficientnet-b0"):
        img = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
        assert ImageEncoder((32, 32, 3), 16, kind)(img).shape == (2, 1, 16)
        enc = ImageEncoder((32, 32, 3), 16, kind, tokens=4, cond_dim=5)
        assert enc.num_tokens == 4 and enc(img, torch.randn(2, 5)).shape == (2, 4, 16)
    cnn = ImageEncoder((32, 32, 3), 16)
    assert sorted(cnn.state_dict()) == sorted(f"{m}.{p}" for m in ("conv.0", "conv.2", "conv.4", "proj") for p in ("weight", "bias"))  # checkpoints of 0.1 load

    from safetensors.torch import save_file

    src = ImageEncoder((32, 32, 3), 16, "film-efficientnet-b0", cond_dim=5)
    state = {k: v.contiguous() for k, v in src.backbone.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(1000, 1280)  # torchvision's head: ignored
    for path in (tmp_path / "b0.safetensors", tmp_path / "b0.pth"):
        save_file(state, str(path)) if path.suffix == ".safetensors" else torch.save(state, path)
        dst = ImageEncoder((32, 32, 3), 16, "film-efficientnet-b0", cond_dim=5)
        assert load_efficientnet_weights(dst, path) == sum(k.startswith("features.") for k in state)
        assert torch.equal(dst.backbone.features[3][1].block[1][0].weight, src.backbone.features[3][1].block[1][0].weight)
    with pytest.raises(ValueError, match="does not fit"):
        load_efficientnet_weights(ImageEncoder((32, 32, 3), 16, "film-efficientnet-b3"), tmp_path / "b0.pth")


def test_network_with_film_efficientnet_and_tokens_decodes_alike_with_and_without_cache():
    torch.manual_seed(0)
    cfg = tiny_model_config(image_encoder="film-efficientnet-b0", image_tokens=3)
    net = QTransformerNet(4, 3, 8, 2, cfg, {"cam": (32, 32, 3)}).eval()
    assert net.num_prefix == 1 + 3 + 1  # state, 3 image tokens, task
    obs, task = torch.randn(2, 4), torch.tensor([0, 1])
    images = {"cam": torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)}
    a, va = decode(net, obs, task, use_cache=True, images=images)
    b, vb = decode(net, obs, task, use_cache=False, images=images)
    assert torch.equal(a, b) and torch.allclose(va, vb, atol=1e-5)


def test_train_a_film_efficientnet_policy_and_reload_it(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["make-dataset", "builtin", "--demos", "3", "--autonomous", "3", "--images", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "4", "--batch-size", "8",
                 "--model.image-encoder", "film-efficientnet-b0", "--model.image-tokens", "2"]) == 0
    config = json.loads((run / "checkpoints" / "step_00000004" / "model" / "config.json").read_text())
    assert config["model"]["image_encoder"] == "film-efficientnet-b0" and config["model"]["image_tokens"] == 2
    policy = QTPolicy.from_checkpoint(run)
    obs = {"state": np.zeros(6, np.float32), "image": np.zeros((32, 32, 3), np.uint8)}
    first = policy.act(obs)
    assert np.array_equal(first, QTPolicy.from_checkpoint(run).act(obs)) and first.shape == (3,)
    with pytest.raises(SystemExit) as exit_info:  # tyro reports flag errors itself: weights for the CNN
        main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(tmp_path / "x"), "--model.image-weights", "w.pth"])
    assert exit_info.value.code == 2
    capsys.readouterr()
    train = ["train", "--preset", "smoke", "--dataset", str(data), "--out", str(tmp_path / "y"), "--model.image-encoder", "film-efficientnet-b0"]
    assert main([*train, "--model.image-weights", str(tmp_path / "none.pth")]) == 2
    assert "none.pth not found" in capsys.readouterr().err


def test_a_saved_vision_language_policy_reloads_and_acts_identically(tmp_path):
    """Camera frames (a window of 2), FiLM-EfficientNet conditioned on the instruction, TokenLearner, hashed
    language: the reloaded policy acts and values alike, on trained and unseen instructions."""
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["make-dataset", "builtin", "--demos", "3", "--autonomous", "3", "--images", "--out", str(data)]) == 0
    assert main(["train", "--preset", "smoke", "--dataset", str(data), "--out", str(run), "--no-progress", "--steps", "4", "--batch-size", "8",
                 "--model.image-encoder", "film-efficientnet-b0", "--model.image-tokens", "2", "--model.frames", "2",
                 "--model.language-encoder", "hash"]) == 0
    a, b = QTPolicy.from_checkpoint(run), QTPolicy.from_checkpoint(run)
    assert a.frames == 2 and a.processor.uses_language
    for (k, v), (k2, v2) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    rng = np.random.default_rng(0)
    obs = {"state": rng.uniform(-1, 1, (3, 6)).astype(np.float32), "image": rng.integers(0, 256, (3, 2, 32, 32, 3), dtype=np.uint8)}
    texts = [a.processor.instructions[0], "an instruction never seen", "stay still"]
    for text in texts:
        np.testing.assert_array_equal(a.act(obs, instruction=text), b.act(obs, instruction=text))
        np.testing.assert_array_equal(a.q_values(obs, instruction=text), b.q_values(obs, instruction=text))
    assert not np.array_equal(a.q_values(obs, instruction=texts[0]), a.q_values(obs, instruction=texts[1]))  # language reaches the values
    one = {k: v[0] for k, v in obs.items()}  # one observation, its frame window (2, 32, 32, 3)
    np.testing.assert_array_equal(a.q_values(one, instruction=texts), b.q_values(one, instruction=texts))
    np.testing.assert_allclose(a.q_values(one, instruction=texts), [a.q_values(one, instruction=t) for t in texts], rtol=0, atol=1e-6)
    assert a.rank_instructions(one, texts) == b.rank_instructions(one, texts)
