"""Speed peer: lucidrains' PyPI package `q-transformer` (0.5.0), measured on CPU beside our issue-6 figures.

    /work/peers/qtpkg/bin/python bench/peer_qtransformer.py [--quick] [--json OUT] [--threads N]

Runs in its own venv (torch 2.14.1 + q-transformer 0.5.0); imports only torch, q_transformer and the
standard library, never our package. torch.set_num_threads(2) unless --threads; every timing is the
median over repeats after warm-up. The 1-minute load average before and after is recorded: on this
2-core machine, when another process keeps the cores busy, any op that opens an OpenMP parallel region
with 2 threads can stall ~8 ms waiting for its second thread, which swamps this small model (seen with
both torch 2.13 and 2.14); compare only figures taken under the same load, and --threads 1 is the
contention-robust figure.

What is measured
  1. Greedy autoregressive decoding of one action, d = 7 action dimensions, K = 256 bins, batch 1 and 64,
     under torch.inference_mode:
       - "head":  QHeadMultipleActions.get_optimal_actions(encoded_state, prob_random_action=0) on a
                  precomputed encoded state: the 7-step autoregressive Q-head loop alone. This is the
                  part that corresponds to our decoder (whose observation token is a cheap MLP).
       - "full":  encode_state(video) + the same head loop, i.e. what one greedy action costs end to end
                  (a tiny MaxViT + TokenLearner + 1-layer state Transformer run first).
     The package's head keeps a self-attention KV cache across the 7 steps (Transformer(..., cache=,
     return_cache=True)), feeding only the newest token; cross-attention K/V over the encoded state are
     recomputed at every step (not cached).
  2. One training step of its autoregressive Q-learning at batch 256 (single timestep, 7 dims, 256 bins):
     QLearner.learn(...) (autoregressive TD loss of the paper's eq. 1 + conservative regulariser, eq. 2;
     three model forwards: online on s with actions, EMA target on s' and on s) + backward
     + gradient clipping + AdamAtan2 step + EMA update: the body of QLearner.forward's loop for one step,
     without its DataLoader (the batch is made once, in memory).

How the configuration is matched to our "default" preset (d_model 128, 2 layers, 4 heads, MLP ratio 4,
one 39-d state token through an MLP, start/bin tokens, K = 256, d = 7)
  - Q head (the autoregressive decoder): dim 128, attn_depth 2, attn_heads 4, attn_dim_head 32
    (4 x 32 = 128), FeedForward mult 4, K = 256, 7 actions, weight-tied bin embeddings (package default),
    not dueling, single critic, num_residual_streams = 1 (plain residual; the package default 4 uses
    hyper-connections: --residual-streams 4 measures that). Its tokens: one start token (mean of the
    encoded state) + 6 previous-bin embeddings, so 7 positions, like ours.
  - Observation: the package has no vector-observation input; it needs video frames. The smallest
    workable vision path is used: 1 RGB frame of 8x8 pixels, MaxViT with one stage (depth (1,)), dim 128,
    4 heads x 32, window 2, no dropout; TokenLearner with 1 output token (so one state token, like ours);
    the state Transformer at its minimum depth 1 (depth 0 crashes: torch.stack of no caches).
  - Text conditioning is off (condition_on_text=False): every text conditioner of the package (T5, CLIP,
    BGE) loads pretrained weights from a model hub in its constructor, even when precomputed text
    embeddings are passed later, and there is no hub access here. QLearner's autoregressive path always
    passes text_embeds to the model, which a text-free model rejects, so the model is a one-method
    subclass whose forward drops text_embeds; nothing is computed differently.

What is not comparable
  - Not same-FLOPs: the peer also runs a vision backbone (MaxViT stage + TokenLearner) and a state
    Transformer layer per observation, each Q-head layer has a cross-attention block and 4 memory
    key/values, and its training step runs three forwards (online + two EMA-target passes) where ours
    may differ. The "head" decode timing is the closest like-for-like figure.
  - Different torch build (2.14.1 CUDA wheel run on CPU vs our 2.13.0 CPU wheel), and AdamAtan2 instead of
    Adam; the EMA update is a plain copy for the first steps (update_after_step 10), as in the package.
  - The package's public get_optimal_actions / get_actions do not pass prob_random_action through to the
    head, whose default is 0.5: as published they pick a random bin per dimension half of the time.
    The timings here call the head with prob_random_action=0 (pure greedy); the cost is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from importlib.metadata import version

import torch
from torch.utils.data import TensorDataset

with warnings.catch_warnings():  # a dependency calls the deprecated torch.jit.script at import
    warnings.filterwarnings("ignore", category=FutureWarning)
    from q_transformer import QLearner, QRoboticTransformer

NUM_ACTIONS = 7
BINS = 256
DIM = 128
IMAGE = 8


class TextFreeQRT(QRoboticTransformer):
    """QRoboticTransformer whose forward ignores text_embeds (QLearner always passes them)."""

    def forward(self, video, texts=None, text_embeds=None, actions=None, cond_drop_prob=0., **kwargs):
        return super().forward(video, actions=actions, cond_drop_prob=cond_drop_prob, **kwargs)


def build(residual_streams: int) -> tuple[TextFreeQRT, dict]:
    vit = dict(
        num_classes=1,  # mlp_head unused (return_embeddings=True)
        dim=DIM,
        depth=(1,),
        heads=4,
        dim_head=32,
        window_size=2,
        dropout=0.0,
        mbconv_expansion_rate=4,
    )
    kwargs = dict(
        num_actions=NUM_ACTIONS,
        action_bins=BINS,
        depth=1,
        heads=4,
        dim_head=32,
        token_learner_num_output_tokens=1,
        condition_on_text=False,
        dueling=False,
        dual_critics=False,
        num_residual_streams=residual_streams,
        weight_tie_action_bin_embed=True,
        q_head_attn_kwargs=dict(attn_heads=4, attn_dim_head=32, attn_depth=2),
    )
    model = TextFreeQRT(vit=vit, **kwargs)
    config = dict(
        observation=f"video: 1 RGB frame, {IMAGE}x{IMAGE} (3*{IMAGE}*{IMAGE} = {3 * IMAGE * IMAGE} values)",
        vision_backbone=dict(vit, note="MaxViT, 1 stage: conv stem (/2) + MBConv (/2) + block & grid window attention, "
                             f"feature map {IMAGE // 4}x{IMAGE // 4}"),
        token_learner_output_tokens=1,
        state_transformer_depth=1,
        text_conditioning="off (conditioners need hub weights)",
        q_head=dict(dim=DIM, depth=2, heads=4, dim_head=32, ff_mult=4, cross_attention=True, mem_kv=4,
                    residual_streams=residual_streams, weight_tied_bin_embeddings=True),
        num_actions=NUM_ACTIONS,
        bins=BINS,
        kv_cache="self-attention K/V cached across the 7 decode steps; cross-attention K/V recomputed each step",
        greedy="q_head.get_optimal_actions(..., prob_random_action=0.0)",
    )
    return model, config


def param_counts(model: torch.nn.Module) -> dict:
    count = lambda m: sum(p.numel() for p in m.parameters())
    return dict(total=count(model), vision=count(model.vit), token_learner=count(model.token_learner),
                state_transformer=count(model.transformer), q_head=count(model.q_head))


def median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def video(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 1, IMAGE, IMAGE)  # b c f h w


def bench_decode(model: TextFreeQRT, batch: int, warmup: int, repeats: int) -> dict:
    model.eval()
    v = video(batch)
    with torch.inference_mode():
        enc = model.encode_state(v)
        head = lambda: model.q_head.get_optimal_actions(enc, prob_random_action=0.0)
        full = lambda: model.q_head.get_optimal_actions(model.encode_state(v), prob_random_action=0.0)
        out = head()
        assert out.shape == (batch, NUM_ACTIONS), out.shape
        head_ms = median_ms(head, warmup, repeats)
        full_ms = median_ms(full, warmup, repeats)
        encode_ms = median_ms(lambda: model.encode_state(v), warmup, repeats)
    return dict(batch=batch, head_ms=head_ms, full_ms=full_ms, encode_state_ms=encode_ms,
                head_us_per_sample=head_ms * 1e3 / batch)


def bench_train(model: TextFreeQRT, batch: int, warmup: int, repeats: int) -> dict:
    tmp = tempfile.TemporaryDirectory()
    learner = QLearner(model, dataset=TensorDataset(torch.zeros(1)), batch_size=batch, num_train_steps=1, learning_rate=3e-4,
                       checkpoint_folder=tmp.name, min_reward=0.0)
    b = batch
    args = (
        torch.zeros(b, 1),                         # text_embeds (ignored by the text-free model)
        video(b),                                  # states, b c f h w
        torch.randint(0, BINS, (b, NUM_ACTIONS)),  # actions, b n
        video(b),                                  # next_states
        torch.zeros(b, 1),                         # next_text_embed (ignored)
        torch.randint(0, 2, (b,)).float(),         # rewards
        torch.zeros(b, dtype=torch.bool),          # dones
    )
    learner.model.train()
    learner.ema_model.train()

    def step():
        learner.optimizer.zero_grad()
        with learner.accelerator.autocast():
            loss, _ = learner.learn(*args, min_reward=0.0, monte_carlo_return=None)
            learner.accelerator.backward(loss)
        learner.accelerator.clip_grad_norm_(learner.model.parameters(), learner.max_grad_norm)
        learner.optimizer.step()
        learner.ema_model.update()
        return loss

    loss = step()
    assert torch.isfinite(loss), loss
    ms = median_ms(step, warmup, repeats)
    tmp.cleanup()
    return dict(batch=batch, step_ms=ms, samples_per_s=batch / ms * 1e3, optimizer="AdamAtan2",
                forwards_per_step="3 (online on s with actions; EMA target on s' and on s with actions)",
                includes="learn() loss + backward + clip_grad_norm(0.5) + optimizer step + EMA update")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--train-batch", type=int, default=256)
    ap.add_argument("--residual-streams", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, config = build(a.residual_streams)
    load_before = os.getloadavg()[0]
    # the train step's first call (checked for a finite loss) is an extra warm-up
    reps = dict(d1=(5, 20), d64=(3, 10), train=(0, 3)) if a.quick else dict(d1=(10, 60), d64=(5, 30), train=(2, 8))

    result = dict(
        peer="q-transformer (lucidrains, PyPI)",
        package_version=version("q-transformer"),
        torch_version=torch.__version__,
        python=platform.python_version(),
        threads=torch.get_num_threads(),
        quick=a.quick,
        config=config,
        params=param_counts(model),
        decode=[bench_decode(model, 1, *reps["d1"]), bench_decode(model, 64, *reps["d64"])],
        train=bench_train(model, a.train_batch, *reps["train"]),
    )
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["loadavg_1m"] = dict(before=load_before, after=os.getloadavg()[0], cores=os.cpu_count())

    p = result["params"]
    print(f"q-transformer {result['package_version']}  torch {result['torch_version']}  threads {result['threads']}")
    print(f"params: total {p['total']:,} (vision {p['vision']:,}, token learner {p['token_learner']:,}, "
          f"state transformer {p['state_transformer']:,}, q head {p['q_head']:,})")
    for d in result["decode"]:
        print(f"decode d={NUM_ACTIONS} K={BINS} batch {d['batch']:>3}: head {d['head_ms']:7.2f} ms  "
              f"full (encode+head) {d['full_ms']:7.2f} ms  encode only {d['encode_state_ms']:6.2f} ms")
    t = result["train"]
    print(f"train step batch {t['batch']}: {t['step_ms']:.1f} ms ({t['samples_per_s']:.0f} samples/s)")
    print(f"wall {result['wall_s']} s  load average (1 min) {load_before:.2f} -> {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
