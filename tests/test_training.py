import pytest
import torch

from helpers.cache import Checkpoint
from helpers.training import adam, fit

TRUE_W = torch.tensor([[2.0, -1.0, 0.5]])


def _problem():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    return model, torch.optim.Adam(model.parameters(), lr=0.05)


def _batch(step, generator):
    x = torch.randn(16, 3, generator=generator)
    return x, x @ TRUE_W.T


def _loss(model, batch, generator):
    x, y = batch
    noise = 0.01 * torch.randn(y.shape, generator=generator)
    return torch.mean((model(x) - y - noise) ** 2), {"w0": model.weight[0, 0].item()}


def test_fit_learns_and_logs():
    model, optimizer = _problem()
    history = fit(model, optimizer, _loss, _batch, 300, seed=0, lr_schedule=lambda step: 1.0 if step < 200 else 0.1)
    assert len(history["loss"]) == len(history["w0"]) == 300
    assert history["loss"][-1] < 1e-3 < history["loss"][0]
    torch.testing.assert_close(model.weight.detach(), TRUE_W, atol=0.02, rtol=0)
    assert not model.training


def test_interrupted_run_resumes_to_identical_parameters(tmp_path):
    model, optimizer = _problem()
    reference = fit(model, optimizer, _loss, _batch, 40, seed=1)
    expected = model.weight.detach().clone()

    interrupted, optimizer = _problem()
    checkpoint = Checkpoint(tmp_path / "run.ckpt")

    def failing_batch(step, generator):
        if step == 27:
            raise KeyboardInterrupt
        return _batch(step, generator)

    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, optimizer, _loss, failing_batch, 40, seed=1, checkpoint=checkpoint, checkpoint_every=10)
    assert checkpoint.load()["step"] == 20

    resumed, optimizer = _problem()
    history = fit(resumed, optimizer, _loss, _batch, 40, seed=1, checkpoint=checkpoint, checkpoint_every=10)
    assert torch.equal(resumed.weight.detach(), expected)
    assert history["loss"] == reference["loss"]


def test_bad_step_counts():
    model, optimizer = _problem()
    with pytest.raises(ValueError, match="num_steps"):
        fit(model, optimizer, _loss, _batch, 0, seed=0)


@pytest.mark.parametrize("decoupled", [False, True])
def test_fused_adam_steps_like_the_per_tensor_loop(decoupled):
    reference_class = torch.optim.AdamW if decoupled else torch.optim.Adam
    torch.manual_seed(0)
    fused_params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    loop_params = [torch.nn.Parameter(p.detach().clone()) for p in fused_params]
    fused, loop = adam(fused_params, 0.1, decoupled=decoupled), reference_class(loop_params, lr=0.1, foreach=False)
    assert type(fused) is reference_class and fused.defaults["fused"]
    for _ in range(3):
        for params, optimizer in ((fused_params, fused), (loop_params, loop)):
            optimizer.zero_grad()
            sum((p**3).sum() for p in params).backward()
            optimizer.step()
    for a, b in zip(fused_params, loop_params, strict=True):
        torch.testing.assert_close(a, b)
