"""A native torch implementation of the PP-OCRv6 small text recognition network.

Read off the ONNX graph that the rapidocr wheel ships (``PP-OCRv6_rec_small.onnx``), with BatchNorms
and RepVGG branches already folded into plain convolutions by the export:

* stem (PP-HGNetV2 style): 3x3/s2 conv, a 2x2-conv branch next to a 2x2 max-pool (both "SAME_UPPER",
  i.e. padded by one pixel right and bottom), concat, 3x3/s2 conv, 1x1 conv, all ReLU -> 96 ch at H/4;
* 13 RepViT blocks (the RepSVTR layout): a depthwise 3x3 token mixer with optional squeeze-excite
  (hard-sigmoid gate) and a residual 1x1 GELU feed-forward; two of them downsample the height by 2
  (depthwise stride (2, 1), then a non-residual feed-forward widening 96 -> 192 -> 384 channels);
* average pool over the remaining height 3 and width 2 -> one column per 8 input pixels;
* SVTR neck: 1x1 conv-BN-swish shortcut, 1x1 conv-BN-swish plus a depthwise 1x7 local mixer, two
  pre-norm transformer blocks (120 dims, 8 heads, swish MLP x2), a final LayerNorm, plus the shortcut;
* CTC head: one linear layer to the classes (blank + 18,708 characters + space).

Module registration order equals the ONNX node order of each layer type; ``onnx_import`` relies on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NeckSpec", "RecNet", "RecNetSpec"]


@dataclass(frozen=True)
class NeckSpec:
    in_channels: int = 384
    dims: int = 120
    depth: int = 2
    num_heads: int = 8
    mlp_hidden: int = 240
    local_kernel: int = 7


@dataclass(frozen=True)
class RecNetSpec:
    """Shape of the network; the defaults are PP-OCRv6 small rec."""

    # (out_channels, downsample, squeeze_excite) per block, as in PaddleOCR's RepSVTR table.
    blocks: tuple[tuple[int, bool, bool], ...] = (
        (96, False, True),
        (96, False, False),
        (96, False, False),
        (192, True, False),
        (192, False, True),
        (192, False, False),
        (192, False, True),
        (192, False, False),
        (192, False, True),
        (192, False, False),
        (384, True, False),
        (384, False, True),
        (384, False, False),
    )
    stem_channels: int = 48
    neck: NeckSpec = NeckSpec()
    num_classes: int = 18710


def _pad_same_upper(x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """ONNX ``auto_pad=SAME_UPPER`` for a 2x2 window at stride 1: one extra row/column at the end."""
    return F.pad(x, (0, 1, 0, 1), value=value)


class Stem(nn.Module):
    def __init__(self, mid: int, out: int) -> None:
        super().__init__()
        self.stem1 = nn.Conv2d(3, mid, 3, stride=2, padding=1)
        self.stem2a = nn.Conv2d(mid, mid // 2, 2)
        self.stem2b = nn.Conv2d(mid // 2, mid, 2)
        self.stem3 = nn.Conv2d(2 * mid, mid, 3, stride=2, padding=1)
        self.stem4 = nn.Conv2d(mid, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem1(x))
        branch = F.relu(self.stem2a(_pad_same_upper(x)))
        branch = F.relu(self.stem2b(_pad_same_upper(branch)))
        pooled = F.max_pool2d(_pad_same_upper(x, float("-inf")), 2, stride=1)
        x = F.relu(self.stem3(torch.cat([pooled, branch], dim=1)))
        return F.relu(self.stem4(x))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // 4, 1)
        self.fc2 = nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * F.hardsigmoid(gate)


class FeedForward(nn.Module):
    def __init__(self, inp: int, hidden: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(inp, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class RepBlock(nn.Module):
    """Token mixer (folded RepVGG depthwise conv, optional SE) then a residual feed-forward."""

    def __init__(self, channels: int, squeeze_excite: bool) -> None:
        super().__init__()
        self.token_mixer = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.se = SqueezeExcite(channels) if squeeze_excite else None
        self.ffn = FeedForward(channels, 2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        if self.se is not None:
            x = self.se(x)
        return x + self.ffn(x)


class DownBlock(nn.Module):
    """Halves the height (not the width: text needs its columns) and widens the channels."""

    def __init__(self, inp: int, out: int) -> None:
        super().__init__()
        self.token_mixer = nn.Conv2d(inp, inp, 3, stride=(2, 1), padding=1, groups=inp)
        self.ffn = FeedForward(inp, out, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.token_mixer(x))


class ConvBNSwish(nn.Module):
    def __init__(self, inp: int, out: int, kernel: tuple[int, int], groups: int = 1) -> None:
        super().__init__()
        padding = (kernel[0] // 2, kernel[1] // 2)
        self.conv = nn.Conv2d(inp, out, kernel, padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.bn(self.conv(x)))


class Attention(nn.Module):
    def __init__(self, dims: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dims, 3 * dims)
        self.proj = nn.Linear(dims, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    def __init__(self, dims: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden)
        self.fc2 = nn.Linear(hidden, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class TransformerBlock(nn.Module):
    def __init__(self, dims: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dims, eps=1e-5)
        self.attn = Attention(dims, num_heads)
        self.norm2 = nn.LayerNorm(dims, eps=1e-5)
        self.mlp = Mlp(dims, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SvtrNeck(nn.Module):
    """Maps the pooled ``(N, C, 1, T)`` backbone map to ``(N, T, dims)`` sequence features."""

    def __init__(self, spec: NeckSpec) -> None:
        super().__init__()
        self.shortcut = ConvBNSwish(spec.in_channels, spec.dims, (1, 1))
        self.conv = ConvBNSwish(spec.in_channels, spec.dims, (1, 1))
        self.local = ConvBNSwish(spec.dims, spec.dims, (1, spec.local_kernel), groups=spec.dims)
        self.blocks = nn.ModuleList(
            TransformerBlock(spec.dims, spec.num_heads, spec.mlp_hidden) for _ in range(spec.depth)
        )
        self.norm = nn.LayerNorm(spec.dims, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x).squeeze(2).transpose(1, 2)
        h = self.conv(x)
        h = h + self.local(h)
        seq = h.squeeze(2).transpose(1, 2)
        for block in self.blocks:
            seq = block(seq)
        return self.norm(seq) + shortcut


class RecNet(nn.Module):
    """``(N, 3, 48, W)`` BGR crops normalised to [-1, 1] -> ``(N, W // 8, classes)`` logits."""

    def __init__(self, spec: RecNetSpec | None = None) -> None:
        super().__init__()
        spec = spec or RecNetSpec()
        first = spec.blocks[0][0]
        self.stem = Stem(spec.stem_channels, first)
        blocks: list[nn.Module] = []
        channels = first
        for out, downsample, squeeze_excite in spec.blocks:
            if downsample:
                blocks.append(DownBlock(channels, out))
            else:
                if out != channels:
                    raise ValueError(f"a non-downsampling block cannot change channels ({channels} -> {out})")
                blocks.append(RepBlock(out, squeeze_excite))
            channels = out
        self.blocks = nn.Sequential(*blocks)
        self.neck = SvtrNeck(spec.neck)
        self.head = nn.Linear(spec.neck.dims, spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Neck output ``(N, T, dims)``: the sequence features the CTC head reads."""
        x = self.blocks(self.stem(x))
        x = F.avg_pool2d(x, (x.shape[2], 2))
        return self.neck(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
