"""Tests for helpers.models.vit: rebuilding DINO / MoCo v3 / DINOv2 / DINOv3 ViT encoders from checkpoints
written here."""

import pytest
import torch

from helpers.models import vit
from helpers.runtime import torch_generator


def _tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ViT (width 64, depth 2, patch 8, 4 × 4 grid) in the timm layout, with a classifier head."""
    torch.manual_seed(seed)
    model = vit.VisionTransformer(dim=64, depth=2, num_heads=1, patch=8, grid=4, hidden=128)
    for parameter in (model.cls_token, model.pos_embed):
        torch.nn.init.normal_(parameter, std=0.5)
    state = dict(model.state_dict())
    state["head.weight"], state["head.bias"] = torch.randn(10, 64), torch.randn(10)
    return state


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 32, 32, generator=torch_generator(0))


def test_dino_layout_round_trip(tmp_path, images):
    state = _tiny_state()
    torch.save(state, tmp_path / "dino.pth")  # DINO releases a bare state dict
    model = vit.load_vit(tmp_path / "dino.pth")
    assert (model.dim, model.patch, model.grid, len(model.blocks)) == (64, 8, 4, 2)
    reference = vit.VisionTransformer(dim=64, depth=2, num_heads=1, patch=8, grid=4, hidden=128)
    reference.load_state_dict({k: v for k, v in state.items() if not k.startswith("head")})
    x = torch.rand(2, 3, 32, 32, generator=torch_generator(1))
    torch.testing.assert_close(model(x), reference(x))
    features = vit.vit_features(model, images, size=32)
    assert features.shape == (3, 64) and torch.equal(features, vit.vit_features(model, images, size=32))


def test_moco_layout_is_unnested_and_unprefixed(tmp_path, images):
    state = _tiny_state()
    moco = {"epoch": 300, "state_dict": {f"module.base_encoder.{k}": v for k, v in state.items()}}
    moco["state_dict"]["module.momentum_encoder.cls_token"] = torch.zeros(1, 1, 64)
    torch.save(moco, tmp_path / "moco.pth.tar")
    torch.save(state, tmp_path / "dino.pth")
    from_moco = vit.vit_features(vit.load_vit(tmp_path / "moco.pth.tar"), images, size=32)
    torch.testing.assert_close(from_moco, vit.vit_features(vit.load_vit(tmp_path / "dino.pth"), images, size=32))


def test_other_resolutions_interpolate_positions(tmp_path, images):
    torch.save(_tiny_state(), tmp_path / "dino.pth")
    model = vit.load_vit(tmp_path / "dino.pth")
    assert vit.vit_features(model, images, size=48).shape == (3, 64)  # 6 × 6 patches from a 4 × 4 grid
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.rand(1, 3, 30, 30))


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        vit.load_vit(tmp_path / "absent.pth")
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "cnn.pth")
    with pytest.raises(ValueError, match="timm layout"):
        vit.load_vit(tmp_path / "cnn.pth")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state dict"):
        vit.load_vit(tmp_path / "list.pth")
    state = _tiny_state()
    state["blocks.1.attn.qkv.weight"] = torch.zeros(10, 64)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="does not fit"):
        vit.load_vit(tmp_path / "broken.pth")


def test_checkpoint_state_checks_without_building(tmp_path):
    torch.save({"model": {f"module.{k}": v for k, v in _tiny_state().items()}}, tmp_path / "dino.pth")
    state = vit.checkpoint_state(tmp_path / "dino.pth")
    assert state.keys() == {k for k in _tiny_state() if not k.startswith("head")}
    good = (tmp_path / "dino.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.pth").write_text("not a checkpoint\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    # bytes that torch's legacy unpickler reads as opcodes fail with KeyError, IndexError or struct.error
    (tmp_path / "hello.pth").write_text("hello\n")
    (tmp_path / "ab.pth").write_bytes(b"ab")
    (tmp_path / "legacy.pth").write_bytes(b"\x80\x02}q\x00X")
    for name, reason in [("truncated.pth", "PytorchStreamReader failed"), ("notes.pth", ""),
                         ("empty.pth", "EOFError"), ("hello.pth", ""), ("ab.pth", ""), ("legacy.pth", "")]:
        with pytest.raises(ValueError, match=f"{name}: not a PyTorch checkpoint \\(.*{reason}") as error:
            vit.checkpoint_state(tmp_path / name)
        assert "\n" not in str(error.value)
        with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
            vit.load_vit(tmp_path / name)
    state = _tiny_state()
    state["pos_embed"] = state["pos_embed"][:, :-1]  # 1 + 15 positions: not a square grid
    torch.save(state, tmp_path / "ragged.pth")
    with pytest.raises(ValueError, match="not a square grid plus CLS"):
        vit.checkpoint_state(tmp_path / "ragged.pth")
    with pytest.raises(FileNotFoundError):
        vit.checkpoint_state(tmp_path / "absent.pth")


def _tiny_dinov2_state(registers: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ViT in DINOv2's layout: patch 8, a 4 × 4 position grid, layer scales, registers, a mask token."""
    torch.manual_seed(seed)
    model = vit.VisionTransformer(dim=64, depth=2, num_heads=2, patch=8, grid=4, hidden=128, layer_scale=True,
                                  num_registers=registers)
    state = {name: torch.randn_like(value) * 0.3 if name.endswith(("gamma", "_token", "tokens", "pos_embed"))
             else value for name, value in model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 64)
    return state


def _dinov2_forward(state: dict[str, torch.Tensor], images: torch.Tensor, heads: int = 2) -> torch.Tensor:
    """DINOv2's forward written out from the state dict: all normed tokens (B, 1 + R + P, dim)."""
    f = torch.nn.functional
    x = f.conv2d(images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=8)
    side, dim = x.shape[-1], x.shape[1]
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
    pos = state["pos_embed"]
    if side != 4:  # DINOv2's interpolate_pos_encoding: offset 0.1, or (register models) offset 0 and antialiasing
        grid = pos[:, 1:].reshape(1, 4, 4, dim).permute(0, 3, 1, 2)
        if "register_tokens" in state:
            grid = f.interpolate(grid, size=(side, side), mode="bicubic", antialias=True)
        else:
            grid = f.interpolate(grid, scale_factor=((side + 0.1) / 4, (side + 0.1) / 4), mode="bicubic")
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)
    x = x + pos
    if "register_tokens" in state:
        x = torch.cat([x[:, :1], state["register_tokens"].expand(len(x), -1, -1), x[:, 1:]], dim=1)
    for i in range(2):
        p = {k[len(f"blocks.{i}."):]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        h = f.layer_norm(x, (dim,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        q, k, v = f.linear(h, p["attn.qkv.weight"], p["attn.qkv.bias"]).view(*x.shape[:2], 3, heads, -1).unbind(2)
        weights = torch.softmax(torch.einsum("bqhc,bkhc->bhqk", q, k) / (dim // heads) ** 0.5, dim=-1)
        attended = torch.einsum("bhqk,bkhc->bqhc", weights, v).reshape(x.shape)
        x = x + p["ls1.gamma"] * f.linear(attended, p["attn.proj.weight"], p["attn.proj.bias"])
        h = f.layer_norm(x, (dim,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        h = f.gelu(f.linear(h, p["mlp.fc1.weight"], p["mlp.fc1.bias"]))
        x = x + p["ls2.gamma"] * f.linear(h, p["mlp.fc2.weight"], p["mlp.fc2.bias"])
    return f.layer_norm(x, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-6)


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("side", [32, 48, 24])  # the trained 4 × 4 grid, a larger one and a smaller one
def test_dinov2_layout_matches_its_forward(tmp_path, registers, side):
    state = _tiny_dinov2_state(registers)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, tmp_path / "dinov2.pth")
    model = vit.load_vit(tmp_path / "dinov2.pth", num_heads=2)  # the default, dim // 64, would be 1 here
    assert model.num_registers == registers and isinstance(model.blocks[0].ls1, vit.LayerScale)
    x = torch.randn(2, 3, side, side, generator=torch_generator(1))
    expected = _dinov2_forward(state, x)
    torch.testing.assert_close(model(x), expected[:, 0], atol=1e-5, rtol=1e-4)
    patches = model.patch_tokens(x)
    grid = side // 8
    assert patches.shape == (2, 64, grid, grid)
    torch.testing.assert_close(patches.flatten(2).transpose(1, 2), expected[:, 1 + registers:], atol=1e-5, rtol=1e-4)


def _tiny_dinov3_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ViT in DINOv3's layout: patch 8, 2 heads of 32, four storage tokens, rotary periods (base 100),
    layer scales, the masked key bias, a mask token."""
    torch.manual_seed(seed)
    model = vit.VisionTransformer(dim=64, depth=2, num_heads=2, patch=8, grid=0, hidden=128, layer_scale=True,
                                  num_registers=4, rope=True, mask_k_bias=True)
    state = {name: torch.randn_like(value) * 0.3 if name.endswith(("gamma", "_token", "tokens", "bias"))
             else value for name, value in model.state_dict().items()}
    state["storage_tokens"] = state.pop("register_tokens")
    state["rope_embed.periods"] = 100.0 ** (2 * torch.arange(8) / 16)  # head_dim 32: 8 periods
    for i in range(2):
        state[f"blocks.{i}.attn.qkv.bias_mask"] = torch.cat([torch.ones(64), torch.zeros(64), torch.ones(64)])
    state["mask_token"] = torch.zeros(1, 64)
    return state


def _dinov3_forward(state: dict[str, torch.Tensor], images: torch.Tensor, heads: int = 2) -> torch.Tensor:
    """DINOv3's evaluation forward written out from the state dict, patch by patch: all normed tokens."""
    f = torch.nn.functional
    x = f.conv2d(images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=8)
    side, dim = x.shape[-1], x.shape[1]
    prefix = 1 + state["storage_tokens"].shape[1]
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), state["storage_tokens"].expand(len(x), -1, -1),
                   x.flatten(2).transpose(1, 2)], dim=1)
    periods = state["rope_embed.periods"]
    sin, cos = [], []
    for row in range(side):
        for col in range(side):
            h, w = 2 * (row + 0.5) / side - 1, 2 * (col + 0.5) / side - 1
            angles = torch.cat([2 * torch.pi * h / periods, 2 * torch.pi * w / periods])
            sin.append(torch.cat([angles.sin(), angles.sin()]))
            cos.append(torch.cat([angles.cos(), angles.cos()]))
    sin, cos = torch.stack(sin), torch.stack(cos)

    def rotate(t):  # (B, N, heads, c): rotate the patch tokens of every head
        half = t.shape[-1] // 2
        turned = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
        patches = t[:, prefix:] * cos[:, None] + turned[:, prefix:] * sin[:, None]
        return torch.cat([t[:, :prefix], patches], dim=1)

    for i in range(2):
        p = {k[len(f"blocks.{i}."):]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        h = f.layer_norm(x, (dim,), p["norm1.weight"], p["norm1.bias"], eps=1e-5)
        qkv = f.linear(h, p["attn.qkv.weight"], p["attn.qkv.bias"] * p["attn.qkv.bias_mask"])
        q, k, v = qkv.view(*x.shape[:2], 3, heads, -1).unbind(2)
        q, k = rotate(q), rotate(k)
        weights = torch.softmax(torch.einsum("bqhc,bkhc->bhqk", q, k) / (dim // heads) ** 0.5, dim=-1)
        attended = torch.einsum("bhqk,bkhc->bqhc", weights, v).reshape(x.shape)
        x = x + p["ls1.gamma"] * f.linear(attended, p["attn.proj.weight"], p["attn.proj.bias"])
        h = f.gelu(f.linear(f.layer_norm(x, (dim,), p["norm2.weight"], p["norm2.bias"], eps=1e-5),
                            p["mlp.fc1.weight"], p["mlp.fc1.bias"]))
        x = x + p["ls2.gamma"] * f.linear(h, p["mlp.fc2.weight"], p["mlp.fc2.bias"])
    return f.layer_norm(x, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-5)


@pytest.mark.parametrize("side", [24, 40])
def test_dinov3_layout_matches_its_forward(tmp_path, side):
    state = _tiny_dinov3_state()
    torch.save(state, tmp_path / "dinov3_vits16_pretrain.pth")
    model = vit.load_vit(tmp_path / "dinov3_vits16_pretrain.pth", num_heads=2)
    assert model.rope and model.num_registers == 4 and not hasattr(model, "pos_embed")
    x = torch.randn(2, 3, side, side, generator=torch_generator(3))
    expected = _dinov3_forward(state, x)
    torch.testing.assert_close(model(x), expected[:, 0], atol=1e-5, rtol=1e-4)
    grid = side // 8
    patches = model.patch_tokens(x)
    assert patches.shape == (2, 64, grid, grid)
    torch.testing.assert_close(patches.flatten(2).transpose(1, 2), expected[:, 5:], atol=1e-5, rtol=1e-4)
    # The key bias is masked: changing it changes nothing.
    state["blocks.0.attn.qkv.bias"][64:128] += 5.0
    torch.save(state, tmp_path / "shifted.pth")
    torch.testing.assert_close(vit.load_vit(tmp_path / "shifted.pth", num_heads=2)(x), model(x))


def test_unsupported_layouts_are_named(tmp_path):
    state = _tiny_dinov2_state()
    torch.save({**state, "blocks.0.mlp.w12.weight": torch.zeros(2, 2)}, tmp_path / "giant.pth")
    with pytest.raises(ValueError, match="SwiGLU"):
        vit.load_vit(tmp_path / "giant.pth")
    torch.save({**_tiny_dinov3_state(), "blocks.0.mlp.w1.weight": torch.zeros(2, 2)}, tmp_path / "plus.pth")
    with pytest.raises(ValueError, match="SwiGLU"):
        vit.load_vit(tmp_path / "plus.pth")
    torch.save({**_tiny_dinov3_state(), "cls_norm.weight": torch.ones(64)}, tmp_path / "7b.pth")
    with pytest.raises(ValueError, match="separate CLS norm"):
        vit.load_vit(tmp_path / "7b.pth")


def test_frozen_patches_read_images_in_the_generator_range(tmp_path):
    torch.save(_tiny_dinov2_state(), tmp_path / "dinov2.pth")
    model = vit.load_vit(tmp_path / "dinov2.pth")
    patches = vit.FrozenPatches(model, size=32)
    images = torch.rand(3, 3, 16, 16, generator=torch_generator(2)) * 2 - 1
    features = patches(images)
    assert features.shape == (3, 64, 4, 4) and patches.channels == 64
    torch.testing.assert_close(features, model.patch_tokens(vit.preprocess((images + 1) / 2, 32)))
    patches.train()
    assert not patches.training and not any(p.requires_grad for p in patches.parameters())
    assert vit.FrozenPatches(model, size=30).size == 32  # rounded to whole patches of 8
    assert vit.FrozenPatches(model, size=3).size == 8
    assert vit.vit_features(model, images[:1] / 2 + 0.5, size=30).shape == (1, 64)
