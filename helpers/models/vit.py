"""Self-supervised ViT backbones (DINO, MoCo v3, DINOv2, DINOv3) from a local checkpoint, for the full scales.

Notebook 01's backbones are ViT-S/16 and ViT-B/16 trained by DINO or MoCo v3 (DINOv2 and DINOv3 load too);
notebook 04 reads the patch tokens of a DINOv3 ViT as Diff-CA does (or of a DINOv2 or DINO one). Their released
checkpoints are plain state dicts in the timm/DeiT layout (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``), possibly nested under
``"state_dict"``, ``"model"`` or ``"teacher"`` and prefixed by
``module.``, ``backbone.`` or ``module.base_encoder.`` (MoCo v3). DINOv2 adds layer scales
(``blocks.{i}.ls1.gamma``, ``ls2.gamma``), optional register tokens (``register_tokens``, placed after CLS) and
a ``mask_token`` used only in training. DINOv3 (ViT-S/B/L/16) drops the learned position embeddings for axial
rotary ones on the patch tokens (``rope_embed.periods``), calls its four registers ``storage_tokens``, masks the
key bias of ``attn.qkv`` (``bias_mask``) and normalises with ε = 1e-5. :func:`load_vit` rebuilds the encoder from
such a file without timm or the official code; the image feature is the final-normed CLS token (as DINO and AbC
use it), the patch features the final-normed patch tokens (``x_norm_patchtokens``). SwiGLU MLPs (DINOv2-g,
DINOv3's "plus" models) and DINOv3-7B's separate CLS norm are not supported and are rejected with an error.
Nothing is downloaded: the user points a parameter at a file they have.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks import one_line
from helpers.progress import progress_bar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NESTING = ("state_dict", "model", "teacher")
_PREFIXES = ("module.base_encoder.", "module.", "backbone.", "base_encoder.")


class LayerScale(nn.Module):
    """DINOv2's per-channel scale of a residual branch: ``x · gamma``."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``; the layer scales
    ``ls1``, ``ls2`` exist only with ``layer_scale`` (DINOv2, DINOv3), the key-bias mask only with
    ``mask_k_bias`` (DINOv3)."""

    def __init__(self, dim: int, num_heads: int, hidden: int, layer_scale: bool = False, eps: float = 1e-6,
                 mask_k_bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        if mask_k_bias:  # DINOv3's LinearKMaskedBias: the bias times the checkpoint's mask
            self.attn.qkv.register_buffer("bias_mask", torch.ones(3 * dim))
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``x`` (B, N, dim); ``rope``: (sin, cos) of shape (P, dim / heads) for the last P tokens (the patches)."""
        b, n, d = x.shape
        qkv_layer = self.attn.qkv
        bias = qkv_layer.bias * qkv_layer.bias_mask if hasattr(qkv_layer, "bias_mask") else qkv_layer.bias
        qkv = F.linear(self.norm1(x), qkv_layer.weight, bias)
        q, k, v = qkv.view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = rotate_patches(q, *rope), rotate_patches(k, *rope)
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.ls1(self.attn.proj(attended.transpose(1, 2).reshape(b, n, d)))
        return x + self.ls2(self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x)))))


def rope_tables(periods: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DINOv3's axial rotary tables for a ``side × side`` patch grid (evaluation: no coordinate augmentation).

    Patch centres are normalised per axis to [−1, 1]; the angle of coordinate c for period p is 2π c / p; the
    (row, column) angles of the ``head_dim / 4`` periods are laid side by side and repeated twice.

    Args:
        periods: ``(head_dim / 4,)`` the checkpoint's ``rope_embed.periods``.
        side: patches per side.

    Returns:
        ``(sin, cos)``, each ``(side², head_dim)`` in row-major patch order.
    """
    centres = (torch.arange(side, dtype=torch.float32, device=periods.device) + 0.5) / side * 2 - 1
    coords = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=-1).flatten(0, 1)  # (P, 2)
    angles = (2 * math.pi * coords[:, :, None] / periods.float()[None, None, :]).flatten(1).tile(2)
    return angles.sin(), angles.cos()


def rotate_patches(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate the last P tokens of ``x`` (B, heads, N, head_dim) by the tables (P, head_dim): ``x cos + ρ(x) sin``
    with ``ρ([x₁, x₂]) = [−x₂, x₁]`` on the two halves of each head; the first N − P tokens stay as they are."""
    prefix = x.shape[-2] - sin.shape[0]
    first, second = x[..., prefix:, :].chunk(2, dim=-1)
    rotated = x[..., prefix:, :] * cos + torch.cat([-second, first], dim=-1) * sin
    return torch.cat([x[..., :prefix, :], rotated], dim=-2)


class VisionTransformer(nn.Module):
    """A ViT encoder in the timm/DeiT parameter layout (DINOv2's with ``layer_scale`` and registers), returning the
    normed CLS token ``(B, dim)``; :meth:`patch_tokens` gives the normed patch tokens.

    Args:
        dim: embedding width (384 for ViT-S, 768 for ViT-B).
        depth: number of blocks.
        num_heads: attention heads (``dim // 64`` for the standard models).
        patch: patch side in pixels (16 for DINO and MoCo v3, 14 for DINOv2).
        grid: patches per side of the position embeddings (14 for 224 px and patch 16; 37 for DINOv2).
        hidden: MLP width (``4 dim``).
        layer_scale: DINOv2's and DINOv3's per-channel scales of the residual branches.
        num_registers: register (DINOv2) or storage (DINOv3) tokens, 0 or 4.
        rope: DINOv3's rotary position embeddings (``rope_embed.periods``) instead of ``pos_embed`` (``grid`` is
            then unused), and its LayerNorm ε = 1e-5.
        mask_k_bias: DINOv3's mask on the qkv bias (``attn.qkv.bias_mask``).
        interpolate_offset: added to the patch grid's side in the position embeddings' interpolation scale factor
            (0.1 for DINO and DINOv2); 0 interpolates to the target size directly (DINOv2 with registers).
        interpolate_antialias: antialias that interpolation (DINOv2 with registers).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, patch: int, grid: int, hidden: int,
                 layer_scale: bool = False, num_registers: int = 0, rope: bool = False, mask_k_bias: bool = False,
                 interpolate_offset: float = 0.1, interpolate_antialias: bool = False):
        super().__init__()
        if dim % num_heads or (rope and dim // num_heads % 4):
            raise ValueError(f"dim {dim} must split into num_heads {num_heads} heads (of a multiple of 4 with rope)")
        eps = 1e-5 if rope else 1e-6
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if rope:
            self.rope_embed = nn.Module()
            self.rope_embed.register_buffer("periods", torch.ones(dim // num_heads // 4))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        if num_registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, num_registers, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, hidden, layer_scale, eps=eps, mask_k_bias=mask_k_bias)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dim, self.patch, self.grid, self.num_registers, self.rope = dim, patch, grid, num_registers, rope
        self.interpolate_offset, self.interpolate_antialias = interpolate_offset, interpolate_antialias

    def _positions(self, side: int) -> torch.Tensor:
        """The position embeddings for a ``side × side`` patch grid: bicubic interpolation of the trained grid, as
        DINO and DINOv2 compute it (scale factor ``(side + offset) / grid``, or the target size when the offset
        is 0)."""
        if side == self.grid:
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            scale = (side + self.interpolate_offset) / self.grid
            target = {"scale_factor": (scale, scale)}
        else:
            target = {"size": (side, side)}
        grid = F.interpolate(grid, mode="bicubic", align_corners=False, antialias=self.interpolate_antialias,
                             **target)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, side * side, self.dim)], dim=1)

    def _normed_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` ImageNet-normalised images, S a multiple of the patch → ``(B, 1 + R + P, dim)``:
        CLS, the R registers and the P patches, after the final norm."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3] \
                or images.shape[2] % self.patch:
            raise ValueError(f"need square (B, 3, S, S) images with S a multiple of {self.patch}, "
                             f"got {tuple(images.shape)}")
        side = images.shape[2] // self.patch
        tokens = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        if not self.rope:
            x = x + self._positions(side)
        if self.num_registers:
            x = torch.cat([x[:, :1], self.register_tokens.expand(len(x), -1, -1), x[:, 1:]], dim=1)
        rope = rope_tables(self.rope_embed.periods, side) if self.rope else None
        for block in self.blocks:
            x = block(x, rope)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` ImageNet-normalised images, S a multiple of the patch → CLS features ``(B, dim)``."""
        return self._normed_tokens(images)[:, 0]

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` ImageNet-normalised images → patch features ``(B, dim, S/patch, S/patch)``."""
        side = images.shape[-1] // self.patch
        patches = self._normed_tokens(images)[:, 1 + self.num_registers:]
        return patches.transpose(1, 2).reshape(len(images), self.dim, side, side)


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
        if not name.startswith(("head", "fc.", "momentum_encoder", "predictor", "mask_token", "local_cls_norm")):
            cleaned["register_tokens" if name == "storage_tokens" else name] = tensor
    return cleaned


def checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The encoder tensors of the ViT checkpoint at ``path``, unnested and unprefixed, checked to be a layout that
    :func:`load_vit` rebuilds; no model is built (the check of a notebook's checkpoint parameter).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a PyTorch checkpoint of tensors, or not a supported ViT in the timm layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ViT checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the user's file: anything torch.load cannot read is not a checkpoint
        # torch's weights-only refusal is a paragraph of advice; the unpickler's own error says what it met
        reason = error.__context__ if isinstance(error, pickle.UnpicklingError) and error.__context__ else error
        raise ValueError(f"{path}: not a PyTorch checkpoint ({one_line(reason)})") from error
    state = _encoder_state(checkpoint)
    if "blocks.0.mlp.w12.weight" in state or "blocks.0.mlp.w1.weight" in state:
        raise ValueError(f"{path} has a SwiGLU MLP (DINOv2 ViT-g, DINOv3 ViT-S+/L+/H+/7B), which is not supported; "
                         "use ViT-S/B/L")
    if "cls_norm.weight" in state:
        raise ValueError(f"{path} has a separate CLS norm (DINOv3 7B), which is not supported; use ViT-S/B/L")
    rope = "rope_embed.periods" in state
    required = ("cls_token", "rope_embed.periods" if rope else "pos_embed", "patch_embed.proj.weight",
                "norm.weight", "blocks.0.mlp.fc1.weight")
    missing = [name for name in required if name not in state]
    if missing:
        raise ValueError(f"{path} is not a ViT checkpoint in the timm layout: missing {', '.join(missing)}")
    if not rope and math.isqrt(state["pos_embed"].shape[1] - 1) ** 2 + 1 != state["pos_embed"].shape[1]:
        raise ValueError(f"pos_embed of shape {tuple(state['pos_embed'].shape)} is not a square grid plus CLS")
    return state


def load_vit(path: str | Path, num_heads: int | None = None) -> VisionTransformer:
    """Rebuild a ViT encoder from a local DINO / MoCo v3 / DINOv2 / DINOv3 checkpoint (eval mode, frozen, on the
    CPU).

    The width, depth, patch size, grid and MLP width are read from the tensors' shapes; the number of heads
    cannot be, and defaults to ``dim // 64`` (true of ViT-S, ViT-B and ViT-L of all four families).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a PyTorch checkpoint, not a ViT state dict in the timm layout
            (:func:`checkpoint_state`), or its tensors do not fit.
    """
    state = checkpoint_state(path)
    rope = "rope_embed.periods" in state
    dim, patch = state["patch_embed.proj.weight"].shape[0], state["patch_embed.proj.weight"].shape[-1]
    grid = 0 if rope else math.isqrt(state["pos_embed"].shape[1] - 1)
    depth = 1 + max(int(name.split(".")[1]) for name in state if name.startswith("blocks."))
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    model = VisionTransformer(dim, depth, num_heads or dim // 64 or 1, patch, grid,
                              state["blocks.0.mlp.fc1.weight"].shape[0],
                              layer_scale="blocks.0.ls1.gamma" in state, num_registers=registers, rope=rope,
                              mask_k_bias="blocks.0.attn.qkv.bias_mask" in state,
                              # DINOv2's register models are built with offset 0 and antialiasing (its hub code).
                              interpolate_offset=0.0 if registers and not rope else 0.1,
                              interpolate_antialias=bool(registers and not rope))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit a ViT of width {dim} and depth {depth}: {error}") from error
    return model.eval().requires_grad_(False)


def patch_multiple(model: VisionTransformer, size: int) -> int:
    """``size`` rounded to the nearest multiple of the model's patch, halves up (at least one patch): 64 px becomes
    70 for DINOv2's 14-px patches and stays 64 for 16-px ones."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return max(1, int(size / model.patch + 0.5)) * model.patch


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``(N, 3, H, W)`` in [0, 1] → bicubically resized to ``size`` px, clamped to [0, 1] and
    ImageNet-normalised, as DINO, MoCo v3 and AbC preprocess."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    x = F.interpolate(images.to(torch.float32), size=(size, size), mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) - mean) / std


@torch.no_grad()
def vit_features(model: VisionTransformer, images: torch.Tensor, *, size: int = 224, batch_size: int = 128,
                 progress: bool = False) -> torch.Tensor:
    """``(N, dim)`` CLS features of ``images`` ``(N, 3, H, W)`` in [0, 1] (brought to ``size`` px, rounded to a
    multiple of the patch, by :func:`preprocess`), batch by batch, returned on the CPU."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (N, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    size = patch_multiple(model, size)
    device = next(model.parameters()).device
    chunks = []
    for chunk in progress_bar(images.split(batch_size), desc="ViT features", disable=not progress):
        chunks.append(model(preprocess(chunk.to(device), size)).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, model.dim)


class FrozenPatches(nn.Module):
    """A frozen ViT's patch features of images in [−1, 1]: (B, 3, S, S) → (B, dim, size/patch, size/patch).

    Diff-CA's semantic tokens read the patch features of a frozen DINOv3; this module puts a local DINOv3 (or
    DINOv2, or DINO) checkpoint in that place (:class:`helpers.models.diffca.TokenEncoder`'s ``patches``).

    Args:
        model: from :func:`load_vit`.
        size: side the images are resized to, rounded to a multiple of the patch (112 gives 8 × 8 patches of 14
            px and 7 × 7 of 16 px).
    """

    def __init__(self, model: VisionTransformer, size: int):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.size, self.channels = patch_multiple(model, size), model.dim

    def train(self, mode: bool = True) -> FrozenPatches:
        return super().train(False)  # frozen: stays in eval mode inside a model that trains

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.patch_tokens(preprocess((images + 1) / 2, self.size))
