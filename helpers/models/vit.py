"""Self-supervised ViT backbones (DINO, MoCo v3) from a local checkpoint, for notebook 01's full scale.

The paper's backbones are ViT-S/16 and ViT-B/16 trained by DINO or MoCo v3. Their released checkpoints are
plain state dicts in the timm/DeiT layout (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``), possibly nested under
``"state_dict"``, ``"model"`` or ``"teacher"`` and prefixed by ``module.``, ``backbone.`` or
``module.base_encoder.`` (MoCo v3). :func:`load_vit` rebuilds the encoder from such a file without timm; the
feature is the final-normed CLS token, as DINO and AbC use it. Nothing is downloaded: the user points
``BACKBONE_PATH`` at a file they have.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NESTING = ("state_dict", "model", "teacher")
_PREFIXES = ("module.base_encoder.", "module.", "backbone.", "base_encoder.")


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, hidden: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.attn.proj(attended.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    """A ViT encoder in the timm/DeiT parameter layout, returning the normed CLS token ``(B, dim)``.

    Args:
        dim: embedding width (384 for ViT-S, 768 for ViT-B).
        depth: number of blocks.
        num_heads: attention heads (``dim // 64`` for the standard models).
        patch: patch side in pixels.
        grid: patches per side of the training resolution (14 for 224 px and patch 16).
        hidden: MLP width (``4 dim``).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, patch: int, grid: int, hidden: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.dim, self.patch, self.grid = dim, patch, grid

    def _positions(self, side: int) -> torch.Tensor:
        """The position embeddings for a ``side × side`` patch grid (bicubic interpolation of the trained grid)."""
        if side == self.grid:
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, side * side, self.dim)], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` ImageNet-normalised images, S a multiple of the patch → ``(B, dim)``."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3] \
                or images.shape[2] % self.patch:
            raise ValueError(f"need square (B, 3, S, S) images with S a multiple of {self.patch}, "
                             f"got {tuple(images.shape)}")
        tokens = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        x = tokens + self._positions(images.shape[2] // self.patch)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


def _encoder_state(checkpoint) -> dict[str, torch.Tensor]:
    """The encoder's tensors of a DINO / MoCo v3 / timm checkpoint, unnested and without prefixes or heads."""
    state = checkpoint
    for key in _NESTING:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("the checkpoint is not a state dict of tensors (nor one nested under "
                         f"{', '.join(_NESTING)})")
    cleaned = {}
    for name, tensor in state.items():
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if not name.startswith(("head", "fc.", "momentum_encoder", "predictor")):
            cleaned[name] = tensor
    return cleaned


def load_vit(path: str | Path, num_heads: int | None = None) -> VisionTransformer:
    """Rebuild a ViT encoder from a local DINO / MoCo v3 checkpoint (eval mode, frozen, on the CPU).

    The width, depth, patch size, grid and MLP width are read from the tensors' shapes; the number of heads
    cannot be, and defaults to ``dim // 64`` (true of ViT-S/16 and ViT-B/16).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a ViT state dict in the timm layout, or its tensors do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ViT checkpoint at {path}")
    state = _encoder_state(torch.load(path, map_location="cpu", weights_only=True))
    required = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "blocks.0.mlp.fc1.weight")
    missing = [name for name in required if name not in state]
    if missing:
        raise ValueError(f"{path} is not a ViT checkpoint in the timm layout: missing {', '.join(missing)}")
    dim, patch = state["patch_embed.proj.weight"].shape[0], state["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    if grid * grid + 1 != state["pos_embed"].shape[1]:
        raise ValueError(f"pos_embed of shape {tuple(state['pos_embed'].shape)} is not a square grid plus CLS")
    depth = 1 + max(int(name.split(".")[1]) for name in state if name.startswith("blocks."))
    model = VisionTransformer(dim, depth, num_heads or dim // 64 or 1, patch, grid,
                              state["blocks.0.mlp.fc1.weight"].shape[0])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit a ViT of width {dim} and depth {depth}: {error}") from error
    return model.eval().requires_grad_(False)


@torch.no_grad()
def vit_features(model: VisionTransformer, images: torch.Tensor, *, size: int = 224, batch_size: int = 128,
                 progress: bool = False) -> torch.Tensor:
    """``(N, dim)`` CLS features of ``images`` ``(N, 3, H, W)`` in [0, 1], resized to ``size`` px and
    ImageNet-normalised (as DINO, MoCo v3 and AbC preprocess), batch by batch, returned on the CPU."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (N, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    device = next(model.parameters()).device
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    chunks = []
    for chunk in tqdm(images.split(batch_size), desc="ViT features", disable=not progress):
        x = F.interpolate(chunk.to(device, torch.float32), size=(size, size), mode="bicubic", align_corners=False)
        chunks.append(model((x.clamp(0, 1) - mean) / std).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, model.dim)
