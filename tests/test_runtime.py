import numpy as np
import pytest
import torch

from helpers.runtime import select_device, setup, torch_generator


def test_setup_is_reproducible():
    first = setup(3, device="cpu", threads=1)
    a = (first.rng().normal(size=4), torch.randn(3, generator=first.torch_generator()), torch.rand(2))
    second = setup(3, device="cpu", threads=1)
    b = (second.rng().normal(size=4), torch.randn(3, generator=second.torch_generator()), torch.rand(2))
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert torch.get_num_threads() == 1


def test_streams_and_seeds_are_independent():
    run = setup(0, device="cpu", threads=1)
    assert not np.array_equal(run.rng(0).random(5), run.rng(1).random(5))
    assert not torch.equal(torch.rand(3, generator=torch_generator(0)), torch.rand(3, generator=torch_generator(1)))
    assert not torch.equal(torch.rand(3, generator=torch_generator(0)), torch.rand(3, generator=torch_generator(0, 1)))


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="DEVICE must be one of"):
        select_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            select_device("cuda")


def test_bad_thread_count():
    with pytest.raises(ValueError, match="THREADS must be >= 1"):
        setup(0, device="cpu", threads=0)
