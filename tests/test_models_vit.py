"""Tests for helpers.models.vit: rebuilding DINO / MoCo v3 ViT encoders from checkpoints written here."""

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
