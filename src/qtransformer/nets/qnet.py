"""The Q network: observation (and task) tokens, then one token per action dimension.

Token layout for one sample, with d action dimensions and P prefix tokens (1 observation token, plus a
task or language token):

    position:  0 .. P-1                                     P        P+1          ...   P+d-1
    token:     [state] [image per camera] [task | language]  start    bin(a^1)     ...   bin(a^{d-1})
    output:    (unused)        Q(s, ·)      Q(s, a^1, ·)   ...   Q(s, a^1..a^{d-1}, ·)

The prefix has a state token when the observation has a state vector, tokens per camera for image
observations (uint8; one from a small CNN by default, N from a TokenLearner, and a FiLM-conditioned
EfficientNet as an option: nets/vision.py), and a task token when there are several tasks. A language
model (language_dim E > 0) has a language token instead of the task token: a linear map of the
instruction's frozen sentence embedding (B, E) -> (B, 1, C). It replaces the task-id embedding rather
than joining it, so that an instruction never seen in training (no task id) still conditions the policy.
Its training instructions' embeddings are a table (buffer `language_table`, (I, E)) that `task` ids
index when no embedding is passed; the policy passes embeddings (`language=`) of any instruction.
The causal mask makes the output at action position i (0-based) depend only on the observation and on
the bins of dimensions < i. A sigmoid head maps each output to K values in [0, 1]; with M value atoms
(cfg.value_atoms) it gives K categorical distributions over M atoms evenly spaced in [0, 1] instead, and
each value is a distribution's mean (HL-Gauss: the learner trains them by cross-entropy). An optional second
head on the same outputs gives K imitation logits per dimension (used to keep decoding on the data's
support; the network itself knows nothing of how either head is trained).
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch
import torch.nn as nn

from ..config import ModelConfig
from .transformer import CausalTransformer, KVCache
from .vision import ImageEncoder


class StateEncoder(nn.Module):
    """Normalise a state vector with statistics fitted on the dataset, then an MLP to one token."""

    def __init__(self, obs_dim: int, d_model: int, hidden: int):
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.mlp = nn.Sequential(nn.Linear(obs_dim, hidden), nn.GELU(), nn.Linear(hidden, d_model))

    def set_normalizer(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        std = torch.as_tensor(std, dtype=torch.float32)
        # A feature constant in the data keeps its scale (std 1) instead of being blown up at test time.
        self.obs_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = (obs - self.obs_mean) / self.obs_std  # (B, obs_dim)
        return self.mlp(x).unsqueeze(1)  # (B, 1, C)


class QTransformerNet(nn.Module):
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_bins: int,
        num_tasks: int,
        cfg: ModelConfig,
        image_shapes: Optional[dict[str, tuple[int, ...]]] = None,
        imitation_head: bool = False,
        language_dim: int = 0,
        num_instructions: int = 0,
    ):
        super().__init__()
        self.obs_dim, self.action_dim, self.num_bins, self.num_tasks = obs_dim, action_dim, num_bins, num_tasks
        self.language_dim, self.num_instructions = (language_dim, num_instructions) if language_dim > 0 else (0, 0)
        self.image_keys = sorted(image_shapes or {})
        if obs_dim <= 0 and not self.image_keys:
            raise ValueError("the observation needs a state vector or at least one image")
        C = cfg.d_model
        self.encoder = StateEncoder(obs_dim, C, cfg.encoder_hidden) if obs_dim > 0 else None
        self.task_embedding = nn.Embedding(num_tasks, C) if num_tasks > 1 and not self.language_dim else None
        # FiLM image encoders read the condition: the instruction's embedding (E) or the task's (C).
        cond_dim = self.language_dim or (C if self.task_embedding is not None else 0)
        self.image_encoders = nn.ModuleList(
            ImageEncoder(tuple(image_shapes[k]), C, cfg.image_encoder, cfg.image_tokens, cond_dim, frames=cfg.frames) for k in self.image_keys
        )
        self.frames = cfg.frames if self.image_keys else 1
        self.language_proj = nn.Linear(language_dim, C) if self.language_dim else None
        if self.language_proj is not None:
            self.register_buffer("language_table", torch.zeros(self.num_instructions, language_dim))  # (I, E)
        has_condition = self.task_embedding is not None or self.language_proj is not None
        self.num_prefix = (self.encoder is not None) + sum(e.num_tokens for e in self.image_encoders) + has_condition
        self.start_token = nn.Parameter(torch.zeros(C))
        # Bin b of dimension j (0-based, j < d-1) is token id j*K + b: each dimension has its own table.
        self.bin_embedding = nn.Embedding(max(action_dim - 1, 1) * num_bins, C)  # plus Fourier features with cfg.bin_fourier
        self.pos_embedding = nn.Parameter(torch.zeros(self.num_prefix + action_dim, C))
        self.transformer = CausalTransformer(C, cfg.n_layers, cfg.n_heads, cfg.mlp_ratio, cfg.dropout)
        self.value_atoms = cfg.value_atoms  # 0: one sigmoid output per bin; M: M logits per bin
        self.head = nn.Linear(C, num_bins * max(self.value_atoms, 1))
        if self.value_atoms:  # atom m sits at the centre of [m/M, (m+1)/M)
            self.register_buffer("atom_values", (torch.arange(self.value_atoms) + 0.5) / self.value_atoms, persistent=False)  # (M,)
        nn.init.normal_(self.start_token, std=0.02)
        nn.init.normal_(self.pos_embedding, std=0.02)
        nn.init.normal_(self.bin_embedding.weight, std=0.02)
        if self.task_embedding is not None:
            nn.init.normal_(self.task_embedding.weight, std=0.02)
        # Optional Fourier features of each bin's place on its axis (cfg.bin_fourier F > 0), one linear map per dimension.
        self.bin_fourier = cfg.bin_fourier
        if self.bin_fourier:
            self.register_buffer("fourier_freqs", torch.pi * 2.0 ** torch.arange(self.bin_fourier), persistent=False)  # (F,)
            self.bin_fourier_proj = nn.Parameter(torch.randn(max(action_dim - 1, 1), 2 * self.bin_fourier, C) * 0.02)  # (d-1, 2F, C)
        # Made last, so that from one seed every other weight starts as in a network without it.
        self.imitation_head = nn.Linear(C, num_bins) if imitation_head else None

    def set_language_table(self, embeddings: torch.Tensor) -> None:
        """The training instructions' embeddings (I, E), the rows that `task` ids index."""
        self.language_table.copy_(torch.as_tensor(embeddings, dtype=torch.float32))

    # -- token construction --------------------------------------------------------------------
    def _prefix(
        self, obs: torch.Tensor, task: Optional[torch.Tensor], images: Optional[dict] = None, language: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Prefix tokens plus the start token: (B, P+1, C). A language model reads `language` (B, E), or
        the rows of its language table that `task` (B,) indexes."""
        tokens = [] if self.encoder is None else [self.encoder(obs)]  # (B, 1, C)
        condition = None  # (B, C) task embedding or (B, E) instruction embedding: the last prefix token, and FiLM's input
        if self.task_embedding is not None:
            if task is None:
                raise ValueError("this model was trained on several tasks: pass task ids")
            condition = self.task_embedding(task.long())  # (B, C)
        if self.language_proj is not None:
            if language is None:
                if task is None:
                    raise ValueError("this model is language-conditioned: pass instruction embeddings (language=) or instruction ids")
                language = self.language_table[task.long()]  # (B, E)
            condition = language.float()  # (B, E)
        if self.image_keys:
            if images is None or any(k not in images for k in self.image_keys):
                raise ValueError(f"this model reads images {self.image_keys}: pass them")
            tokens += [enc(images[k], condition) for k, enc in zip(self.image_keys, self.image_encoders, strict=True)]  # each (B, T, C)
        if self.task_embedding is not None:
            tokens.append(condition.unsqueeze(1))  # (B, 1, C)
        if self.language_proj is not None:
            tokens.append(self.language_proj(condition).unsqueeze(1))  # (B, 1, C)
        tokens.append(self.start_token.expand(tokens[0].shape[0], 1, -1))  # (B, 1, C)
        x = torch.cat(tokens, dim=1)  # (B, P+1, C)
        return x + self.pos_embedding[: self.num_prefix + 1]

    def _bin_tokens(self, bins: torch.Tensor, first_dim: int) -> torch.Tensor:
        """bins (B, m) of dimensions first_dim..first_dim+m-1 -> tokens (B, m, C) at their positions."""
        m = bins.shape[1]
        dims = torch.arange(first_dim, first_dim + m, device=bins.device)  # (m,)
        x = self.bin_embedding(dims * self.num_bins + bins.long())  # (B, m, C)
        if self.bin_fourier:
            centre = (bins.float() + 0.5) * (2.0 / self.num_bins) - 1.0  # (B, m) in (-1, 1)
            angle = centre.unsqueeze(-1) * self.fourier_freqs  # (B, m, F)
            feats = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)  # (B, m, 2F)
            x = x + torch.einsum("bmf,mfc->bmc", feats, self.bin_fourier_proj[dims]).to(x.dtype)  # (B, m, C)
        pos = self.num_prefix + 1 + dims  # the bin of dim j feeds the token of dim j+1
        return x + self.pos_embedding[pos]

    def head_outputs(self, h: torch.Tensor) -> torch.Tensor:
        """Trunk outputs (..., C) -> the value head's raw outputs: logits (..., K), or (..., K, M) with M value atoms."""
        out = self.head(h).float()
        return out if not self.value_atoms else out.view(*out.shape[:-1], self.num_bins, self.value_atoms)

    def values_from_head(self, out: torch.Tensor) -> torch.Tensor:
        """head_outputs (..., K) or (..., K, M) -> values (..., K) in [0, 1]: the sigmoid, or the atoms' mean."""
        if not self.value_atoms:
            return torch.sigmoid(out)
        return torch.softmax(out, dim=-1) @ self.atom_values  # (..., K)

    def values(self, h: torch.Tensor) -> torch.Tensor:
        """Trunk outputs (..., C) -> values (..., K) in [0, 1]."""
        return self.values_from_head(self.head_outputs(h))

    def imitation_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Trunk outputs (..., C) -> imitation logits (..., K); only for a network built with imitation_head."""
        if self.imitation_head is None:
            raise ValueError("this network has no imitation head (train with --algo.imitation-weight > 0)")
        return self.imitation_head(h).float()

    def features(
        self, obs: torch.Tensor, bins: torch.Tensor, task: Optional[torch.Tensor] = None, images: Optional[dict] = None,
        language: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Teacher-forced trunk outputs at the d action positions, (B, d, C); both heads read them."""
        x = self._prefix(obs, task, images, language)
        if self.action_dim > 1:
            x = torch.cat([x, self._bin_tokens(bins[:, : self.action_dim - 1], 0)], dim=1)
        h, _ = self.transformer(x)
        return h[:, self.num_prefix :]  # (B, d, C)

    def logits(
        self, obs: torch.Tensor, bins: torch.Tensor, task: Optional[torch.Tensor] = None, images: Optional[dict] = None
    ) -> torch.Tensor:
        """The head's outputs before the sigmoid, (B, d, K), teacher-forced like forward (for the BC baseline).
        Greedy decoding ranks bins by these (policy.py): the sigmoid keeps their order but rounds every output
        above about 17 to exactly 1.0 in float32, which would tie a BC network's confident bins."""
        if self.value_atoms:
            raise ValueError("a network with value atoms has no per-bin logits (behaviour cloning trains the plain head)")
        return self.head(self.features(obs, bins, task, images)).float()

    # -- passes ---------------------------------------------------------------------------------
    def forward(
        self, obs: torch.Tensor, bins: torch.Tensor, task: Optional[torch.Tensor] = None, images: Optional[dict] = None
    ) -> torch.Tensor:
        """Teacher-forced pass. obs (B, obs_dim), bins (B, d) -> values (B, d, K).

        values[:, i, k] = Q(s, a^1..a^i given by `bins`, a^{i+1} = k) in 0-based dims; bins[:, d-1] is unused.
        """
        return self.values(self.features(obs, bins, task, images))  # (B, d, K) in [0, 1]

    def first_dim_features(self, obs: torch.Tensor, task: Optional[torch.Tensor] = None, images: Optional[dict] = None) -> torch.Tensor:
        """Trunk output at the first action position only: (B, C). Needs just the prefix tokens."""
        return self.start_features(obs, task, images)[0]

    def first_dim_values(self, obs: torch.Tensor, task: Optional[torch.Tensor] = None, images: Optional[dict] = None) -> torch.Tensor:
        """Values of the first action dimension only: (B, K)."""
        return self.values(self.first_dim_features(obs, task, images))

    def start_features(
        self, obs: torch.Tensor, task: Optional[torch.Tensor] = None, images: Optional[dict] = None,
        language: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Begin autoregressive decoding: the trunk output for the first dimension (B, C) and the KV cache."""
        h, cache = self.transformer(self._prefix(obs, task, images, language))
        return h[:, -1], cache

    def step_features(self, prev_bin: torch.Tensor, dim: int, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        """Feed the bin chosen for dimension dim-1 (B,), get dimension dim's trunk output (B, C) and the cache."""
        x = self._bin_tokens(prev_bin.view(-1, 1), dim - 1)  # (B, 1, C)
        h, cache = self.transformer(x, cache)
        return h[:, -1], cache

    def start(self, obs: torch.Tensor, task: Optional[torch.Tensor] = None, images: Optional[dict] = None) -> tuple[torch.Tensor, KVCache]:
        """Begin autoregressive decoding: first dimension's values (B, K) and the KV cache."""
        h, cache = self.start_features(obs, task, images)
        return self.values(h), cache

    def step(self, prev_bin: torch.Tensor, dim: int, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        """Feed the bin chosen for dimension dim-1 (B,), get dimension dim's values (B, K) and the cache."""
        h, cache = self.step_features(prev_bin, dim, cache)
        return self.values(h), cache


def parameter_count(
    obs_dim: int, action_dim: int, num_bins: int, num_tasks: int, cfg: ModelConfig, image_shapes: Optional[dict] = None,
    imitation_head: bool = False, language_dim: int = 0, num_instructions: int = 0,
) -> int:
    """The network's parameter count, found without allocating it (built on the meta device)."""
    with torch.device("meta"):
        net = QTransformerNet(
            obs_dim, action_dim, num_bins, num_tasks, cfg, image_shapes, imitation_head=imitation_head, language_dim=language_dim,
            num_instructions=num_instructions,
        )
    return sum(p.numel() for p in net.parameters())


def memory_bytes(device: Union[str, torch.device] = "cpu") -> int:
    """The memory of `device`: the machine's RAM for the CPU, the GPU's own for CUDA."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a large machine
        return 2**40


def check_model_size(
    obs_dim: int, action_dim: int, num_bins: int, num_tasks: int, cfg: ModelConfig, image_shapes: Optional[dict] = None,
    device: Union[str, torch.device] = "cpu", training: bool = True, imitation_head: bool = False, language_dim: int = 0,
    num_instructions: int = 0,
) -> int:
    """Refuse, before allocating anything, a network that would not fit `device`'s memory: its weights
    (float32) once for inference, five times for training (weights, target network, gradients and
    AdamW's two moments). Returns the parameter count; raises ValueError naming the sizes and the fix."""
    n = parameter_count(obs_dim, action_dim, num_bins, num_tasks, cfg, image_shapes, imitation_head, language_dim, num_instructions)
    need = n * 4 * (5 if training else 1)
    have = memory_bytes(device)
    if need > have:
        what = "to train (weights, target network, gradients and AdamW's two moments)" if training else "for its weights"
        raise ValueError(
            f"model: d_model={cfg.d_model}, n_layers={cfg.n_layers}, mlp_ratio={cfg.mlp_ratio}, encoder_hidden={cfg.encoder_hidden} "
            f"with obs_dim={obs_dim}, action_dim={action_dim}, num_bins={num_bins} give {n:,} parameters, about {need / 2**30:,.1f} GiB "
            f"{what}, more than the {have / 2**30:,.1f} GiB of memory of {torch.device(device)}; lower model.d_model, "
            "model.n_layers or model.encoder_hidden"
        )
    return n
