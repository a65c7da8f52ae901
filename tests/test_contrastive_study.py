"""Tests for helpers.contrastive_study: notebook 04's scores on known answers (no long training)."""

import numpy as np
import pytest
import torch

from helpers import contrastive_study as cs
from helpers.data import faces
from helpers.models import diffca, separator


@pytest.fixture(scope="module")
def splits():
    return cs.faces_split(60, 60, 16, seed=0), cs.faces_split(40, 40, 16, seed=1)


def test_faces_split_layout(splits):
    train, _ = splits
    assert train.images.shape == (120, 3, 16, 16) and train.images.min() >= -1 and train.images.max() <= 1
    assert (train.y[:60] == 0).all() and (train.y[60:] == 1).all()
    labels = train.probe_labels
    assert set(labels) == set(cs.FACTOR_NAMES)
    assert (labels["frame"][:60] == 0).all() and (labels["frame"][60:] >= 1).all()  # 0 = no glasses
    aligned = cs.faces_split(10, 10, 16, seed=0, aligned=True)
    assert aligned.common_names == ("skin", "mouth", "eyes") and set(aligned.probe_labels) == {
        "skin", "mouth", "eyes", "frame", "frame_colour"}
    assert (aligned.common[:, :3] == faces.ALIGNED_POSE).all() and aligned.varying_common.shape == (20, 3)
    assert aligned.probe_classes == {"skin": 4, "mouth": 3, "eyes": 3, "frame": 3, "frame_colour": 4}  # + "none"


def test_unaligned_runs_are_named_apart():
    """ALIGNED is a preset value (True at both scales): the unaligned variant gets its own run name and files."""
    from helpers.config import resolve

    common = {"SCALE": "small", "SEED": 0, "DEVICE": "cpu", "PATCH_ENCODER_PATH": ""}
    default = resolve("04_diffca_training_swaps", ALIGNED=None, **common)
    assert default.aligned is True and default.run_name == "04_diffca_training_swaps"
    unaligned = resolve("04_diffca_training_swaps", ALIGNED=False, **common)
    assert unaligned.aligned is False and unaligned.run_name.endswith("-alignedFalse")


def _oracle(splits, leak_label: bool):
    """Codes made of the true factors: salient = one-hot salient factors, common = one-hot common factors
    (plus the dataset label when ``leak_label``)."""
    rows = {id(split.images): split for split in splits}
    rng = np.random.default_rng(0)

    def one_hot(factors, sizes):
        return np.concatenate([np.eye(size)[np.clip(factors[:, j], 0, None)] * (factors[:, j:j + 1] >= 0)
                               for j, size in enumerate(sizes)], axis=1)

    def encode(images):
        split = rows[id(images)]
        salient = one_hot(split.salient, faces.SALIENT.sizes) + 0.01 * rng.standard_normal((len(split.y), 5))
        common = one_hot(split.common, faces.COMMON.sizes) + 0.01 * rng.standard_normal((len(split.y), 21))
        if leak_label:
            common = np.concatenate([common, split.y.numpy()[:, None]], axis=1)
        return salient, common

    return encode


def test_code_scores_on_oracle_and_leaky_codes(splits):
    train, test = splits
    perfect = cs.code_scores(_oracle(splits, leak_label=False), train, test, seed=0)
    assert perfect["salient_probe_acc"] > 0.95 and perfect["common_probe_acc"] > 0.95
    assert perfect["common_label_leak"] < 0.65  # the factors alone do not tell the sets apart
    assert perfect["salient_common_leak"] < 0.6
    leaky = cs.code_scores(_oracle(splits, leak_label=True), train, test, seed=0)
    assert leaky["common_label_leak"] > 0.95


class _TruthProbe:
    """A stand-in probe that reads factors from a lookup: the decoder hands it the rows it should report."""

    def __init__(self, test, source_common, source_salient):
        self.test, self.source_common, self.source_salient = test, source_common, source_salient

    def predict(self, images):
        common = self.test.common[self.source_common]
        salient = self.test.salient[self.source_salient] + 1
        out = {name: torch.from_numpy(common[:, j]) for j, name in enumerate(faces.COMMON.names)}
        out.update({name: torch.from_numpy(salient[:, j]) for j, name in enumerate(faces.SALIENT.names)})
        return out


def test_swap_scores_known_answers(splits):
    _, test = splits
    a, b = cs.swap_partners(test, 50, seed=0)
    assert (test.y[b] == 1).all()
    images = test.images[a]  # the probe stand-in ignores the pixels
    perfect = cs.swap_scores(images, _TruthProbe(test, a.numpy(), b.numpy()), test, a, b)
    assert perfect == {"swap_accuracy": 1.0, "swap_colour_accuracy": 1.0, "common_preservation": 1.0}
    unchanged = cs.swap_scores(images, _TruthProbe(test, a.numpy(), a.numpy()), test, a, b)
    same = (test.salient[a.numpy()] == test.salient[b.numpy()]).all(1)
    assert unchanged["swap_accuracy"] == pytest.approx(same.mean())
    swapped_faces = cs.swap_scores(images, _TruthProbe(test, b.numpy(), b.numpy()), test, a, b)
    assert swapped_faces["common_preservation"] < 0.7


def test_edit_success_needs_the_glasses_right_and_the_face_kept(splits):
    _, test = splits
    targets, backgrounds = torch.arange(40, 60), torch.arange(0, 20)
    removed = _TruthProbe(test, targets.numpy(), backgrounds.numpy())  # A's face, a background's (absent) glasses
    assert cs.edit_success(test.images[targets], removed, test, targets, glasses=False) == 1.0
    assert cs.edit_success(test.images[targets], removed, test, targets, glasses=True) == 0.0
    garbled = _TruthProbe(test, backgrounds.numpy(), backgrounds.numpy())  # glasses gone, but another face
    expected = (test.varying_common[targets.numpy()] == test.varying_common[backgrounds.numpy()]).all(1).mean()
    assert cs.edit_success(test.images[targets], garbled, test, targets, glasses=False) == pytest.approx(expected)


def test_oracle_additive_swap_adds_the_true_token_change():
    """A background face and the same face with glasses: the oracle swap of A = the plain face and B = the face with
    glasses has the tokens Z_A + Z_B − Z_A = Z_B, so it decodes to B's own reconstruction."""
    common = faces.COMMON.sample(1, np.random.default_rng(0)).repeat(2, axis=0)
    images = np.concatenate([faces.render(common[:1], None, 16), faces.render(common[1:], np.array([[1, 2]]), 16)])
    split = cs.FacesSplit(torch.from_numpy(images) * 2 - 1, torch.tensor([0, 1]), common,
                          np.array([[-1, -1], [1, 2]]))
    torch.testing.assert_close(cs.glasses_removed(split), split.images[:1])
    stage1 = diffca.Stage1(16, dim=16, num_tokens=3, block_out_channels=(16, 32), seed=0).eval()
    swapped = cs.oracle_additive_swaps(stage1, split, torch.tensor([0]), torch.tensor([1]), steps=2, seed=0)
    own = diffca.decode(stage1, cs.tokens_of(stage1, split.images[1:]), steps=2, seed=0)
    torch.testing.assert_close(swapped, own, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="target row"):
        cs.oracle_additive_swaps(stage1, split, torch.tensor([1]), torch.tensor([0]), steps=2, seed=0)


def test_salient_interpolation_endpoints_are_the_two_swaps(splits):
    _, test = splits
    stage1 = diffca.Stage1(16, dim=16, num_tokens=3, block_out_channels=(16, 32), seed=0).eval()
    sep = separator.Separator(16, 3, depth=1, heads=2, hidden=16, seed=0).eval()
    a, b = test.images[0], test.images[-1]
    images = cs.salient_interpolation(stage1, sep, a, b, np.array([0.0, 1.0]), steps=2, seed=3)
    decode = cs.token_swap_decoder(stage1, sep, steps=2, seed=3)
    with torch.no_grad():
        own = decode(a[None], a[None])  # common of a + salient of a, the same start noise
        swap = decode(a[None], b[None])
    torch.testing.assert_close(images[:1], own, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(images[1:], swap, atol=1e-5, rtol=1e-5)


def test_cpca_projections_find_the_target_only_direction():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(400, 2, 3, generator=generator)
    y = (torch.arange(400) >= 200).long()
    hidden = 2 * torch.randn(200, generator=generator)
    tokens[200:] += hidden[:, None, None]  # a direction shared by every feature, varying only in the target
    encode = cs.cpca_projections(tokens, y, alpha=1.0, num_components=1)
    salient, common = encode(tokens)
    assert salient.shape == (400, 1) and common.shape == (400, 1)
    assert abs(np.corrcoef(salient[200:, 0], hidden.numpy())[0, 1]) > 0.95


def test_identifiability_table_recovers_with_every_condition():
    table = cs.identifiability_table(300, dim=6, salient_dim=1, common_dim=3, seed=0)
    assert table.iloc[0]["salient"] < 0.05
    assert table.loc["closed form (oblique projector)", "salient"] < 0.05
    assert table.loc["drop pinning", "salient"] > 0.3


def test_feature_distances_of_candidate_sets():
    reference = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(reference, 3, stride=1, padding=1, count_include_pad=False)
    distances = cs.feature_distances({"same": reference, "blurred": blurred, "other": reference.roll(1, 0)},
                                     reference, num_images=4)
    assert list(distances.index) == ["same", "blurred", "other"]
    assert distances["same"] == 0 and 0 < distances["blurred"] < distances["other"]
    with pytest.raises(ValueError, match="num_images must lie in 1..6"):
        cs.feature_distances({"same": reference}, reference, num_images=7)


def test_study_stage1_reads_a_local_vit_checkpoint(splits, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from helpers.models import vit

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    checkpoint = vit.VisionTransformer(dim=24, depth=1, num_heads=2, patch=8, grid=2, hidden=48, layer_scale=True)
    torch.save({"teacher": checkpoint.state_dict()}, tmp_path / "dinov2.pth")
    cfg = SimpleNamespace(seed=0, device="cpu", codec_steps=2, codec_batch=16, codec_lr=1e-3, codec_channels=8,
                          stage1_steps=2, stage1_batch=16, stage1_lr=1e-3, token_dim=16, num_tokens=3,
                          unet_channels=(16, 32), patch_encoder_path=str(tmp_path / "dinov2.pth"),
                          patch_encoder_size=24, query_depth=1)  # 3 × 3 patches from a 2 × 2 grid: interpolated
    model, history = cs.study_stage1(cfg, splits[0])
    assert isinstance(model.encoder.patches, vit.FrozenPatches) and model.encoder.patches.size == 24
    assert len(history["loss"]) == 2
    # The same weights come back from the cache, and the codec-patch run is a different entry.
    again, _ = cs.study_stage1(cfg, splits[0])
    torch.testing.assert_close(again.state_dict(), model.state_dict())
    default, _ = cs.study_stage1(SimpleNamespace(**{**vars(cfg), "patch_encoder_path": ""}), splits[0])
    assert not isinstance(default.encoder.patches, vit.FrozenPatches)


def test_full_preset_models_build_and_step(tmp_path, monkeypatch):
    """The full scale's shapes (64 px faces, 16 × 16 latents, a three-level UNet, 16 tokens of width 64) run end to
    end, one or two steps each, so a GPU run does not fail on a shape after hours."""
    from types import SimpleNamespace

    from helpers.config import resolve

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    full = resolve("04_diffca_training_swaps", SCALE="full", SEED=0, DEVICE="cpu")
    steps = {f"{name}_steps": 2 for name in ("codec", "stage1", "separator", "splitter", "cvae", "probe")}
    batches = {f"{name}_batch": 8 for name in ("codec", "stage1", "separator", "splitter", "cvae", "probe")}
    cfg = SimpleNamespace(**{**full.values, **steps, **batches, "seed": 0, "device": "cpu", "patch_encoder_path": ""})
    train = cs.faces_split(8, 8, full.image_size, seed=0)
    stage1, _ = cs.study_stage1(cfg, train)
    tokens = cs.tokens_of(stage1, train.images)
    assert stage1.sample_shape == (full.codec_channels, 16, 16) and tokens.shape == (16, 16, 64)
    assert diffca.decode(stage1, tokens[:2], steps=2, seed=0).shape == (2, 3, 64, 64)
    sep, _ = cs.study_separator(cfg, tokens, train.y)
    salient, common = sep.eval()(tokens)
    assert salient.shape == (16, 16, 64) and common.shape == (16, 16, 64)
    cs.study_splitter(cfg, tokens, train.y)
    contrastive_vae, _ = cs.study_cvae(cfg, train)
    probe = cs.study_probe(cfg, train)
    assert set(cs.probe_accuracy_on(probe, train.images, train)) == set(cs.FACTOR_NAMES)
    assert contrastive_vae is not None


def test_code_omes_scores_each_code_against_its_own_factors(monkeypatch):
    """With a renderer that writes the factors into the pixels, an encoder that reads them back is an oracle: its
    salient code (the salient factors) and common code (the common ones) each beat a code of the wrong factors."""

    def render(common, salient, size):
        images = np.zeros((len(common), 3, size, size), np.float32)
        images[:, 0, 0, :8] = np.concatenate([common, salient], axis=1) / 10
        return images

    monkeypatch.setattr(cs.faces, "render", render)
    rng = np.random.default_rng(0)

    def read(images):  # the factors back from the images in [-1, 1], plus a little noise
        return ((images[:, 0, 0, :8] + 1) / 2 * 10).round().numpy() + 0.05 * rng.standard_normal((len(images), 8))

    oracle = cs.code_omes(lambda images: (read(images)[:, 6:], read(images)[:, :6]), 300, 16, seed=0)
    wrong = cs.code_omes(lambda images: (read(images)[:, :2], read(images)[:, 2:]), 300, 16, seed=0)
    assert oracle["omes_salient"] > wrong["omes_salient"] + 0.1
    assert oracle["omes_common"] > wrong["omes_common"] + 0.1
    assert abs(oracle["omes_joint"] - wrong["omes_joint"]) < 0.02  # the same columns, in another order
    poses = []
    monkeypatch.setattr(cs.faces, "render", lambda common, salient, size: poses.append(common[:, :3]) or render(
        common, salient, size))
    aligned = cs.code_omes(lambda images: (read(images)[:, 6:], read(images)[:, :6]), 50, 16, seed=0, aligned=True)
    assert (np.concatenate(poses) == faces.ALIGNED_POSE).all()  # only skin, mouth, eyes and the glasses vary
    assert set(aligned) == {"omes_joint", "omes_salient", "omes_common"}
