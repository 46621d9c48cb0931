"""Image encoders: one camera frame (B, H, W, C) uint8 -> tokens (B, T, d_model), T = max(1, image_tokens).

- `cnn` (the default, fast on a CPU): three strided convolutions. Without a TokenLearner, one token: a
  linear map of the whole feature map (keeping where things are, which pooling would lose).
- `film-efficientnet-b0` / `-b3`: EfficientNet (Tan & Le 2019), the encoder of RT-1 and of the paper's
  Q-Transformer, with a FiLM layer (Perez et al. 2018) after every MBConv block, conditioned on the
  instruction embedding (or, without language, on the task embedding):

      x <- x * (1 + gamma(c)) + beta(c),    gamma, beta: linear maps of c, initialised to 0,

  so training starts from the plain network. Without a condition (one task, no language) it is the
  plain EfficientNet. Its modules carry torchvision's parameter names (`features.*`), so a state dict
  of torchvision's `efficientnet_b0` / `efficientnet_b3` (ImageNet weights a user has locally) loads
  into it (`load_efficientnet_weights`); torchvision is not needed. Stochastic depth is left out (it has
  no parameters). Frames are scaled to [0, 1] and normalised with ImageNet's mean and std.
- `frames` W > 1: a window of the last W frames per camera (the paper's s_{t-w:t}), each frame encoded
  by the same encoder: W x T tokens, oldest first.
- `image_tokens` N > 0: a TokenLearner (Ryoo et al. 2021) turns the final feature map (B, F, h, w)
  into N tokens: N spatial attention maps a_n = sigmoid(conv1x1(GELU(conv1x1(x)))) (B, N, h, w), token
  n = mean over positions of a_n * x (B, N, F), then a linear map F -> d_model. RT-1 uses 8 per frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

ENCODERS = ("cnn", "film-efficientnet-b0", "film-efficientnet-b3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# EfficientNet-B0's stages (torchvision's table): expand ratio, kernel, stride, in, out channels, blocks.
_B0_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))
_SCALE = {"film-efficientnet-b0": (1.0, 1.0), "film-efficientnet-b3": (1.2, 1.4)}  # width, depth multipliers


def _divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: round to a multiple of `divisor`, never more than 10 % down."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class FiLM(nn.Module):
    """x (B, F, h, w), c (B, E) -> x * (1 + gamma(c)) + beta(c); the identity at initialisation."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond.to(x.dtype)).chunk(2, dim=-1)  # (B, F) each
        return x * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]


class TokenLearner(nn.Module):
    """Feature map (B, F, h, w) -> N tokens (B, N, F), each a learned spatial soft-selection of the map."""

    def __init__(self, channels: int, num_tokens: int, hidden: int = 64):
        super().__init__()
        self.attention = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, num_tokens, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.attention(x)).flatten(2)  # (B, N, h*w)
        return torch.einsum("bnp,bfp->bnf", a, x.flatten(2)) / a.shape[-1]  # (B, N, F)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: conv (no bias), batch norm, SiLU."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.SiLU()) if act else nn.Sequential(*layers)


class _SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, F, 1, 1)
        return x * torch.sigmoid(self.fc2(nn.functional.silu(self.fc1(s))))


class _MBConv(nn.Module):
    def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int):
        super().__init__()
        mid = _divisible(cin * expand)
        layers = [_conv_bn(cin, mid, 1)] if mid != cin else []
        layers += [_conv_bn(mid, mid, k, stride, groups=mid), _SqueezeExcitation(mid, max(1, cin // 4)), _conv_bn(mid, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class EfficientNetFeatures(nn.Module):
    """EfficientNet's convolutional trunk with FiLM after every MBConv block: (B, 3, H, W) -> (B, F, h, w)."""

    def __init__(self, kind: str, cond_dim: int = 0):
        super().__init__()
        width, depth = _SCALE[kind]
        stages = [(e, k, s, _divisible(i * width), _divisible(o * width), int(math.ceil(n * depth))) for e, k, s, i, o, n in _B0_STAGES]
        features: list[nn.Module] = [_conv_bn(3, stages[0][3], 3, 2)]
        channels = []
        for e, k, s, cin, cout, n in stages:
            blocks = [_MBConv(e, k, s if b == 0 else 1, cin if b == 0 else cout, cout) for b in range(n)]
            features.append(nn.Sequential(*blocks))
            channels += [cout] * n
        self.out_channels = 4 * stages[-1][4]
        features.append(_conv_bn(stages[-1][4], self.out_channels, 1))
        self.features = nn.Sequential(*features)
        self.film = nn.ModuleList(FiLM(cond_dim, c) for c in channels) if cond_dim > 0 else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = (x - self.mean) / self.std  # x in [0, 1]: ImageNet's normalisation
        x = self.features[0](x)
        j = 0
        for stage in self.features[1:-1]:
            for block in stage:
                x = block(x)
                if self.film is not None and cond is not None:
                    x = self.film[j](x, cond)
                j += 1
        return self.features[-1](x)


class ImageEncoder(nn.Module):
    """One camera: uint8 (B, H, W, C) [and the condition (B, E)] -> tokens (B, T, d_model)."""

    def __init__(self, shape: tuple[int, int, int], d_model: int, kind: str = "cnn", tokens: int = 0, cond_dim: int = 0, width: int = 32,
                 frames: int = 1):
        super().__init__()
        self.frames = frames
        if kind not in ENCODERS:
            raise ValueError(f"model.image_encoder: '{kind}' is not one of {', '.join(ENCODERS)}")
        H, W, C = shape
        self.kind, self.tokens = kind, tokens
        if kind == "cnn":
            self.conv = nn.Sequential(
                nn.Conv2d(C, width, 5, stride=2, padding=2), nn.GELU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
                nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            )
            channels = 2 * width
        else:
            if C != 3:
                raise ValueError(f"model.image_encoder '{kind}' reads RGB frames (3 channels), the camera has {C}; use --model.image-encoder cnn")
            self.backbone = EfficientNetFeatures(kind, cond_dim)
            channels = self.backbone.out_channels
        if tokens > 0:
            self.token_learner = TokenLearner(channels, tokens)
            self.proj = nn.Linear(channels, d_model)
        elif kind == "cnn":
            h, w = H, W
            for _ in range(3):  # each stride-2 convolution (k 5, pad 2 or k 3, pad 1): n -> (n - 1) // 2 + 1
                h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            self.proj = nn.Linear(channels * h * w, d_model)
        else:
            self.proj = nn.Linear(channels, d_model)

    @property
    def num_tokens(self) -> int:
        return self.frames * max(1, self.tokens)

    def forward(self, img: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, H, W, C), or with frames W > 1 windows (B, W, H, W, C) oldest first -> (B, W x T, d_model),
        each frame encoded alike (the same weights, the same condition), its T tokens in frame order."""
        if self.frames > 1:
            if img.dim() != 5 or img.shape[1] != self.frames:
                raise ValueError(f"this encoder reads windows of {self.frames} frames, (B, {self.frames}, H, W, C); got {tuple(img.shape)}")
            B = img.shape[0]
            cond = cond.repeat_interleave(self.frames, dim=0) if cond is not None else None  # (B*W, E)
            return self._encode(img.flatten(0, 1), cond).reshape(B, -1, self.proj.out_features)  # (B, W*T, d_model)
        return self._encode(img, cond)

    def _encode(self, img: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        x = img.permute(0, 3, 1, 2).float() / 255.0  # (B, C, H, W) in [0, 1]
        if self.kind == "cnn":
            fmap = self.conv(x - 0.5)  # (B, F, h, w), inputs in [-0.5, 0.5]
        else:
            fmap = self.backbone(x, cond)  # (B, F, h, w)
        if self.tokens > 0:
            return self.proj(self.token_learner(fmap))  # (B, N, d_model)
        if self.kind == "cnn":
            return self.proj(fmap.flatten(1)).unsqueeze(1)  # (B, 1, d_model)
        return self.proj(fmap.mean((2, 3))).unsqueeze(1)  # (B, 1, d_model): global average pooling


def load_efficientnet_weights(encoder: ImageEncoder, path) -> int:
    """Load a local torchvision EfficientNet state dict (.pth / .pt saved with torch.save, or .safetensors)
    into the encoder's backbone (`features.*`; torchvision's classifier is ignored). Returns the number
    of tensors loaded; raises ValueError naming the file when the weights do not fit."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model.image_weights: {path} not found; pass a torchvision EfficientNet state dict saved on this machine")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k.startswith("features.")}
    own = {k: v for k, v in encoder.backbone.state_dict().items() if k.startswith("features.")}  # FiLM is ours alone
    missing = sorted(set(own) - set(state))
    bad = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if missing or bad:
        raise ValueError(f"model.image_weights: {path} does not fit {encoder.kind} (missing {missing[:3]}, mismatched {bad[:3]}); "
                         "pass the state dict of torchvision's matching efficientnet model")
    encoder.backbone.load_state_dict(state, strict=False)
    return len(state)
