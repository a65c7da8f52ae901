import numpy as np
import pytest
import torch

from helpers.data import images


@pytest.mark.parametrize("name", images.IMAGE_NAMES)
def test_load_photo(name):
    photo = images.load_photo(name)
    assert photo.ndim == 3 and photo.shape[2] == 3 and min(photo.shape[:2]) >= 100
    assert photo.dtype == np.float32 and photo.min() >= 0 and photo.max() <= 1 and photo.max() > photo.min()
    assert images.load_photo(name) is photo and not photo.flags.writeable


def test_load_photo_rejects_unknown_names():
    with pytest.raises(ValueError, match="astronaut"):
        images.load_photo("brain")


def test_photo_crops():
    crops, source = images.photo_crops(400, 32, np.random.default_rng(0))
    assert crops.shape == (400, 3, 32, 32) and crops.dtype == np.float32
    assert crops.min() >= 0 and crops.max() <= 1
    assert source.shape == (400,) and source.dtype == np.int64
    assert set(source) == set(range(len(images.IMAGE_NAMES)))
    assert len(np.unique(crops.reshape(400, -1), axis=0)) == 400
    again, again_source = images.photo_crops(400, 32, np.random.default_rng(0))
    np.testing.assert_array_equal(crops, again)
    np.testing.assert_array_equal(source, again_source)
    assert not np.array_equal(crops, images.photo_crops(400, 32, np.random.default_rng(1))[0])


def test_photo_crops_come_from_their_source():
    names = ("camera", "coffee")
    crops, source = images.photo_crops(50, 16, np.random.default_rng(2), names=names)
    assert set(source) <= {0, 1}
    # camera is grey (equal channels), coffee is in colour.
    grey = np.ptp(crops, axis=1).max(axis=(1, 2)) < 1e-6
    np.testing.assert_array_equal(grey, source == 0)


def test_photo_crops_invalid_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="size"):
        images.photo_crops(3, 0, rng)
    with pytest.raises(ValueError, match="unknown image name"):
        images.photo_crops(3, 8, rng, names=("camera", "eagle"))
    with pytest.raises(ValueError, match="names"):
        images.photo_crops(3, 8, rng, names=())
    assert images.photo_crops(0, 8, rng)[0].shape == (0, 3, 8, 8)


def test_mnist_digits():
    digits, labels = images.mnist_digits()
    assert digits.shape == (5000, 28, 28) and digits.dtype == np.float32
    assert digits.min() == 0 and digits.max() == 1
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels), [500] * 10)


def test_sklearn_digits():
    digits, labels = images.sklearn_digits()
    assert digits.shape == (1797, 8, 8) and digits.dtype == np.float32
    assert digits.min() == 0 and digits.max() == 1
    assert labels.shape == (1797,) and set(labels) == set(range(10))


def test_reframe_shapes_determinism_and_identity():
    import torch

    from helpers.data.images import reframe
    from helpers.runtime import torch_generator

    images = torch.rand(3, 3, 16, 16, generator=torch_generator(0))
    views = reframe(images, 4, torch_generator(1))
    assert views.shape == (12, 3, 16, 16) and 0 <= views.min() and views.max() <= 1
    assert torch.equal(views, reframe(images, 4, torch_generator(1)))
    assert not torch.equal(views, reframe(images, 4, torch_generator(2)))
    # a full-size window without flips gives the image back
    torch.testing.assert_close(reframe(images, 2, torch_generator(3), zoom=(1.0, 1.0), flip=False),
                               images.repeat_interleave(2, dim=0), atol=1e-5, rtol=0)
    # view j of image i sits at row i * views + j (constant images keep their value under any window)
    constants = torch.arange(3.0).div(3).view(3, 1, 1, 1).expand(3, 3, 16, 16)
    reframed = reframe(constants, 4, torch_generator(4))
    torch.testing.assert_close(reframed, constants.repeat_interleave(4, dim=0))
    for bad in (dict(views=0), dict(views=2, zoom=(0.0, 0.5)), dict(views=2, zoom=(0.9, 0.5))):
        with pytest.raises(ValueError):
            reframe(images, generator=torch_generator(0), **bad)


def test_gaussian_blur_known_answers():
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(images.gaussian_blur(image, 0), image)
    assert torch.equal(images.gaussian_blur(image, torch.zeros(2)), image)
    constant = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(images.gaussian_blur(constant, 1.5), constant)
    torch.testing.assert_close(images.gaussian_blur(constant, torch.tensor([0.7, 1.5])), constant)
    blurred = images.gaussian_blur(image, 1.0)
    assert blurred.shape == image.shape
    # blurring removes high frequencies: neighbouring pixels get closer
    assert blurred.diff(dim=-1).abs().mean() < image.diff(dim=-1).abs().mean()
    impulse = torch.zeros(1, 3, 15, 15)
    impulse[..., 7, 7] = 1
    assert images.gaussian_blur(impulse, 1.0).sum().item() == pytest.approx(3.0, rel=1e-5)  # mass preserved
    # one σ per image: image 0 is left as it is, image 1 is blurred as on its own
    per_image = images.gaussian_blur(image, torch.tensor([0.0, 1.0]))
    assert torch.equal(per_image[0], image[0])
    torch.testing.assert_close(per_image[1:], images.gaussian_blur(image[1:], 1.0))
    with pytest.raises(ValueError, match="sigma"):
        images.gaussian_blur(image, -1)
