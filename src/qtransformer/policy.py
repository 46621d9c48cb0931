"""The deployable policy: greedy autoregressive decoding (KV-cached), exploration, value queries."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .actions import ActionDiscretizer
from .algo.support import prior_scores, restrict, support_mask
from .config import PRIOR_WEIGHT  # the weight a policy with a BC prior decodes at where its model config records none
from .nets import QTransformerNet
from .processor import ModelInputs, ObservationProcessor


def carried_prior_weight(meta: dict) -> float:
    """The prior weight a model config records (`train --prior-weight`), else PRIOR_WEIGHT."""
    return float((meta.get("prior") or {}).get("weight", PRIOR_WEIGHT))


def _choose(values: torch.Tensor, epsilon: float, temperature: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """values (B, K) -> bins (B,): argmax, or a softmax sample at `temperature`, then epsilon-uniform."""
    if temperature > 0:
        probs = torch.softmax(values.float() / temperature, dim=-1)
        bins = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(values.device)
    else:
        bins = values.argmax(dim=-1)
    if epsilon > 0:
        B, K = values.shape
        explore = torch.rand(B, generator=generator) < epsilon
        random_bins = torch.randint(K, (B,), generator=generator)
        bins = torch.where(explore.to(values.device), random_bins.to(values.device), bins)
    return bins


def _choice_values(
    net: QTransformerNet, h: torch.Tensor, support_tau: float, prior_weight: float = 0.0, greedy: bool = False,
    logits: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trunk output (B, C) -> (values (B, K), the scores to choose from: values + prior_weight x log p of
    the imitation head, outside its support at `support_tau` set to -inf; the values themselves at 0, 0).
    `logits` (B, K): the imitation logits to use instead of the net's own head (a separate BC network's).

    `greedy` (the scores only feed an argmax) with neither rule: the head's outputs before the sigmoid,
    which order the bins as the values do but without the ties float32's sigmoid makes of large outputs
    (every output above about 17 becomes exactly 1.0, so a BC network's confident bins would tie and the
    argmax would take the lowest of them). Sampling at a temperature keeps the values."""
    out = net.head_outputs(h)  # (B, K), or (B, K, M) with value atoms
    values = net.values_from_head(out)  # (B, K)
    if support_tau <= 0 and prior_weight <= 0:
        return values, (out if greedy and not net.value_atoms else values)
    if logits is None:
        logits = net.imitation_logits(h)  # (B, K)
    return values, restrict(prior_scores(values, logits, prior_weight), support_mask(logits, support_tau))


@torch.inference_mode()
def decode(
    net: QTransformerNet,
    obs: torch.Tensor,
    task: Optional[torch.Tensor] = None,
    use_cache: bool = True,
    images: Optional[dict] = None,
    epsilon: float = 0.0,
    temperature: float = 0.0,
    generator: Optional[torch.Generator] = None,
    support_tau: float = 0.0,
    language: Optional[torch.Tensor] = None,
    prior_weight: float = 0.0,
    prior: Optional[tuple[QTransformerNet, ModelInputs]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Autoregressive decoding over action dimensions. obs (B, obs_dim) -> bins (B, d), values (B, d).

    values[:, i] is the value of the bin chosen at dimension i. With the cache, one pass over the prefix
    then d-1 one-token steps; without it, d full passes over the growing sequence (same result).
    support_tau > 0 chooses (greedily or by temperature) only among bins whose imitation probability is
    >= tau x the best bin's (algo/support.py); prior_weight > 0 chooses by Q + prior_weight x log p of the
    imitation head (algo/support.py); epsilon-exploration stays uniform over all bins.
    `prior` = (a BC network, its inputs for the same observations): both rules read that network's
    per-dimension logits instead of an imitation head, decoded alongside with the same chosen bins.
    """
    B, d = obs.shape[0], net.action_dim  # obs is (B, obs_dim), (B, 0) for an image-only model
    bins = torch.zeros(B, d, dtype=torch.long, device=obs.device)
    chosen_values = torch.zeros(B, d, device=obs.device)
    pnet, px = prior if prior is not None else (None, None)
    if use_cache:
        h, cache = net.start_features(obs, task, images, language)  # (B, C)
        if pnet is not None:
            hp, pcache = pnet.start_features(px.obs, px.task, px.images, px.language)  # (B, C')
    for i in range(d):
        if not use_cache:
            h = net.features(obs, bins, task, images, language)[:, i]  # (B, C): only bins < i influence it (causal)
            if pnet is not None:
                hp = pnet.features(px.obs, bins, px.task, px.images, px.language)[:, i]  # (B, C')
        elif i > 0:
            h, cache = net.step_features(bins[:, i - 1], i, cache)
            if pnet is not None:
                hp, pcache = pnet.step_features(bins[:, i - 1], i, pcache)
        logits = None if pnet is None else pnet.head_outputs(hp).float()  # (B, K)
        values, allowed = _choice_values(net, h, support_tau, prior_weight, greedy=temperature <= 0, logits=logits)  # (B, K) each
        bins[:, i] = _choose(allowed, epsilon, temperature, generator)
        chosen_values[:, i] = values.gather(1, bins[:, i : i + 1]).squeeze(1)
    return bins, chosen_values


def greedy_decode(
    net: QTransformerNet,
    obs: torch.Tensor,
    task: Optional[torch.Tensor] = None,
    images: Optional[dict] = None,
    support_tau: float = 0.0,
    language: Optional[torch.Tensor] = None,
    prior_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding with the KV cache, the same result as `decode(net, obs, task, support_tau=..., prior_weight=...)`,
    written as one straight-line trace (d is fixed per network) so that torch.compile fuses all d steps
    into one program: see QTPolicy(compile=True). obs (B, obs_dim) -> bins (B, d), values (B, d)."""
    h, cache = net.start_features(obs, task, images, language)  # (B, C)
    bins, chosen = [], []
    for i in range(net.action_dim):
        if i > 0:
            h, cache = net.step_features(bins[-1], i, cache)
        values, allowed = _choice_values(net, h, support_tau, prior_weight, greedy=True)  # (B, K) each
        b = allowed.argmax(dim=-1)  # (B,)
        bins.append(b)
        chosen.append(values.gather(1, b[:, None])[:, 0])
    return torch.stack(bins, dim=1), torch.stack(chosen, dim=1)


class QTPolicy:
    """A trained Q-Transformer as a policy. Load with `QTPolicy.from_checkpoint(path)`.

    Observations and instructions become model inputs through `self.processor` (processor.py), rebuilt
    from config.json: `act(obs, instruction="open the drawer")` for a language-conditioned policy (any
    text: one never seen in training is embedded by the checkpoint's encoder), `act(obs, task=i)` for a
    multi-task one without language."""

    def __init__(
        self,
        net: QTransformerNet,
        discretizer: ActionDiscretizer,
        meta: Optional[dict] = None,
        device="cpu",
        compile: bool = False,
        support_tau: Optional[float] = None,
        prior_weight: Optional[float] = None,
        prior: Optional["QTPolicy"] = None,
    ):
        """`compile=True` runs greedy actions through torch.compile: about 2x lower latency at batch 1
        on CPU (docs/benchmarks.md), after a one-off compilation of tens of seconds per batch size. For
        control loops with a fixed batch; exploration (epsilon, temperature) stays eager.

        `support_tau`: decode only among bins whose imitation probability is >= tau x the best bin's
        (networks with an imitation head); None takes the training run's --algo.support-tau.
        `prior_weight`: decode by Q + prior_weight x log p of the imitation head (algo/support.py); None
        takes the training run's --algo.prior-weight.
        `prior`: a BC policy trained on the same data (--algo.method bc) whose probabilities both rules read
        instead of an imitation head, decoded alongside (a second network per decision). With a prior and
        neither rule given, prior_weight is the one the training run recorded (`train --prior-weight`; 0.01,
        PRIOR_WEIGHT, where it recorded none); with both rules at 0 the prior is dropped (the plain argmax)."""
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.discretizer = discretizer
        self.meta = meta or {}
        self.prior = prior
        if prior is not None:
            self._check_prior(prior)
            if support_tau is None and prior_weight is None:
                prior_weight = carried_prior_weight(self.meta)
        self.support_tau = self._decoding_setting("support_tau", support_tau, 1.0)
        self.prior_weight = self._decoding_setting("prior_weight", prior_weight, float("inf"))
        if self.support_tau == 0 and self.prior_weight == 0:
            self.prior = None  # the plain argmax never reads it (prior_weight=0: decode without a carried prior)
        if self.prior is not None and compile:
            raise ValueError("compile=True covers one network; a policy with a prior decodes eagerly: leave compile off (or pass prior_weight=0)")
        self.processor = ObservationProcessor.for_network(self.net, self.meta)
        self.model_dir: Optional[Path] = None  # set when loaded from a checkpoint (evaluation workers reload it)
        greedy = partial(greedy_decode, self.net, support_tau=self.support_tau, prior_weight=self.prior_weight)
        self._greedy = torch.compile(greedy, dynamic=False) if compile else None

    def _check_prior(self, prior: "QTPolicy") -> None:
        """A prior must be a BC network over the same bins and tasks, or its probabilities mean other actions."""
        method = (prior.meta.get("algo") or {}).get("method", "qtransformer")
        where = f" ({prior.model_dir})" if prior.model_dir is not None else ""
        if method != "bc":
            raise ValueError(f"the prior{where} was trained with --algo.method {method}; it must be a BC run on the same data (--algo.method bc)")
        d = self.discretizer
        if prior.discretizer.num_bins != d.num_bins or not (np.array_equal(prior.discretizer.low, d.low) and np.array_equal(prior.discretizer.high, d.high)):
            raise ValueError(f"the prior{where} discretises actions differently (its bins or action bounds differ): train it on the same dataset with the same --algo.num-bins")
        if (prior.meta.get("model") or {}).get("frames", 1) != (self.meta.get("model") or {}).get("frames", 1):
            raise ValueError(f"the prior{where} reads another number of frames per camera (--model.frames): train it with the policy's")
        if list(prior.meta.get("task_names") or []) != list(self.meta.get("task_names") or []):
            raise ValueError(f"the prior{where} was trained on other tasks ({prior.meta.get('task_names')} against {self.meta.get('task_names')}): train it on the same dataset")
        prior.device, prior.net = self.device, prior.net.to(self.device)  # its inputs and network where the policy's are

    def _decoding_setting(self, name: str, value: Optional[float], high: float) -> float:
        """A decoding setting that reads the imitation head (support_tau, prior_weight): the given value, or
        the training run's (0 without an imitation head); checked to lie in [0, high]."""
        if value is None:
            value = float((self.meta.get("algo") or {}).get(name, 0.0)) if self.net.imitation_head is not None else 0.0
        if not 0.0 <= value <= high:
            raise ValueError(f"{name} must be " + (f"in [0, {high:g}]" if high < float("inf") else ">= 0") + f", got {value}")
        if value > 0 and self.net.imitation_head is None and self.prior is None:
            raise ValueError(f"{name} > 0 needs a policy trained with an imitation head (--algo.imitation-weight > 0) or a prior (a BC checkpoint)")
        return value

    @classmethod
    def from_checkpoint(
        cls, path: Union[str, Path], device: str = "cpu", compile: bool = False, support_tau: Optional[float] = None,
        prior_weight: Optional[float] = None, prior_checkpoint: Union[None, str, Path] = None,
    ) -> "QTPolicy":
        """`prior_checkpoint`: a BC run's checkpoint on the same data, loaded as the policy's `prior`; by
        default the prior the checkpoint carries (model/prior/, runs trained with --prior), if any."""
        from .checkpoint import PRIOR_DIR, load_model, resolve_model_dir

        model_dir = resolve_model_dir(path)
        if prior_checkpoint is None and (model_dir / PRIOR_DIR / "config.json").exists():
            prior_checkpoint = model_dir / PRIOR_DIR
        prior = None if prior_checkpoint is None else cls.from_checkpoint(prior_checkpoint, device=device)
        net, discretizer, meta = load_model(model_dir, device=device)
        policy = cls(net, discretizer, meta, device, compile=compile, support_tau=support_tau, prior_weight=prior_weight, prior=prior)
        policy.model_dir = model_dir
        return policy

    @property
    def action_chunk(self) -> int:
        """Environment steps per decision (--algo.action-chunk h): `act` returns h x d numbers, the actions
        of h steps (step-major), which environments made by `make_env` run open-loop (envs.ActionChunk)."""
        return int((self.meta.get("algo") or {}).get("action_chunk", 1))

    @property
    def frames(self) -> int:
        """Frames per camera the policy reads (model.frames); W > 1: step environments made by make_env."""
        return self.processor.frames

    def make_env(self, env_id: str, **kwargs):
        """The environment `env_id` (envs.make_env) as this policy reads and drives it: wrapped in
        envs.FrameWindow when it takes windows of several frames per camera, and in envs.ActionChunk when
        one decision covers several steps."""
        from .envs import make_env

        env = make_env(env_id, **kwargs)
        if self.frames > 1:
            from .envs.frames import FrameWindow

            env = FrameWindow(env, self.frames)
        if self.action_chunk > 1:
            from .envs.chunks import ActionChunk

            env = ActionChunk(env, self.action_chunk)
        return env

    @property
    def env_id(self) -> Optional[str]:
        """The environment id recorded with the model (never one that would import a module: see env_id_from_file)."""
        from .envs import env_id_from_file

        where = self.model_dir / "config.json" if self.model_dir is not None else "the policy's meta"
        return env_id_from_file(self.meta.get("env_id"), where)

    @staticmethod
    def env_task_name(env_id: str) -> Optional[str]:
        """The task a single-task MetaWorld id names ("metaworld:reach-v3" -> "reach-v3"), else None."""
        if not env_id.startswith("metaworld:"):
            return None
        from .envs.metaworld import tasks_from_env_id

        tasks = tasks_from_env_id(env_id)
        return tasks[0] if len(tasks) == 1 else None

    def task_for_env(self, env_id: str, task: Optional[int] = None) -> Optional[int]:
        """The task id to act with in `env_id`: `task` when given; None for a single-task policy and for a
        language-conditioned one (which takes instructions: instruction_for_env); for a multi-task policy
        in "metaworld:<task>", that task's id by name; otherwise an error."""
        names = list(self.meta.get("task_names") or [])
        if self.processor.uses_language:
            return None
        if task is not None:
            if self.net.task_embedding is None:
                raise ValueError(f"--task {task}: this policy was trained on a single task ({names}), it takes no task id; drop --task")
            if isinstance(task, bool) or not 0 <= int(task) < self.net.num_tasks:
                raise ValueError(f"--task {task}: this policy was trained on {self.net.num_tasks} tasks {names}; pass an id from 0 to {self.net.num_tasks - 1}")
            return task
        if self.net.task_embedding is None:
            return None
        name = self.env_task_name(env_id)
        if name is None:
            raise ValueError(f"this policy was trained on tasks {names}: pass a task id (--task)")
        if name not in names:
            raise ValueError(f"this policy was trained on tasks {names}, not '{name}'")
        return names.index(name)

    def instruction_for_env(self, env_id: str, task: Optional[int] = None, instruction: Optional[str] = None) -> Optional[str]:
        """The instruction to act on in `env_id`: `instruction` when given (any text); for a language-
        conditioned policy otherwise the training instruction of task id `task`, of the task that
        "metaworld:<task>" names, or of the only task; None for a policy without language (which refuses one)."""
        p = self.processor
        if p.uses_language and instruction is None and task is None:
            name = self.env_task_name(env_id)
            if name in p.task_instructions:
                return p.task_instructions[name]
        return p.instruction_for(task, instruction)

    def _inputs(self, obs, task, instruction) -> ModelInputs:
        return self.processor.model_inputs(obs, task=task, instruction=instruction, device=self.device)

    def _prior_inputs(self, obs, task, instruction) -> Optional[tuple[QTransformerNet, ModelInputs]]:
        """(the prior's network, the same observations as its own processor makes them), or None."""
        return None if self.prior is None else (self.prior.net, self.prior._inputs(obs, task, instruction))

    def act(
        self,
        obs,
        task=None,
        epsilon: float = 0.0,
        temperature: float = 0.0,
        generator: Optional[torch.Generator] = None,
        instruction: Union[None, str, list[str]] = None,
    ) -> np.ndarray:
        """Observation (obs_dim,) or (B, obs_dim) (or a Dict of them) -> action (d,) or (B, d) at bin centres;
        with action chunks of h steps, (h x d,) or (B, h x d): run them through an environment from `make_env`.

        `instruction`: the text a language-conditioned policy acts on (one, or one per observation); `task`:
        a task id (a multi-task policy without language; for a language one, that task's training instruction).
        Greedy by default. For data collection: `temperature` samples each dimension's bin from
        softmax(values / temperature), `epsilon` then replaces it by a uniform bin with that probability.
        """
        x = self._inputs(obs, task, instruction)
        if self._greedy is not None and epsilon == 0 and temperature == 0:
            with torch.inference_mode():
                bins, _ = self._greedy(x.obs, x.task, x.images, language=x.language)
        else:
            bins, _ = decode(
                self.net, x.obs, x.task, epsilon=epsilon, temperature=temperature, generator=generator, images=x.images,
                support_tau=self.support_tau, language=x.language, prior_weight=self.prior_weight, prior=self._prior_inputs(obs, task, instruction),
            )
        actions = self.discretizer.decode(bins)  # (B, d)
        return actions[0] if x.single else actions

    def q_values(self, obs, task=None, instruction: Union[None, str, list[str]] = None) -> np.ndarray:
        """The value of the greedy action, Q(s, a*) in [0, 1]: a success estimate (affordance). () or (B,);
        (N,) for one observation with a list of N instructions (or task ids): one value per instruction."""
        x = self._inputs(obs, task, instruction)
        _, values = decode(self.net, x.obs, x.task, images=x.images, support_tau=self.support_tau, language=x.language,
                           prior_weight=self.prior_weight, prior=self._prior_inputs(obs, task, instruction))
        v = values[:, -1].float().cpu().numpy()  # value at the last dimension = Q of the full action
        return v[0] if x.single else v

    def rank_instructions(self, obs, instructions: Sequence[str]) -> list[tuple[str, float]]:
        """SayCan-style planning: the instructions that one observation affords, most feasible first, as
        (instruction, Q(s, greedy action)) pairs. A language-conditioned policy takes any texts; a policy
        without language takes its task names (`processor.task_names`)."""
        texts = [str(t) for t in instructions]
        if not texts:
            raise ValueError("rank_instructions: no instructions given; pass a list of texts")
        if self.processor.uses_language:
            values = self.q_values(obs, instruction=texts)
        else:
            names = list(self.processor.task_names)
            unknown = [t for t in texts if t not in names]
            if unknown:
                raise ValueError(f"this policy was trained without language: it ranks its task names {names}, not {unknown}")
            if self.processor.uses_task_id:
                values = self.q_values(obs, task=np.array([names.index(t) for t in texts]))
            else:  # one task: one value
                values = np.full(len(texts), float(self.q_values(obs)))
        order = np.argsort(-np.asarray(values), kind="stable")
        return [(texts[i], float(values[i])) for i in order]
