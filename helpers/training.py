"""A small, resumable training loop shared by every model the notebooks train.

Each step draws its batch and its noise from a generator seeded by ``(seed, step)``, so the run does not
depend on a global random state: a run interrupted and resumed from its last checkpoint ends with exactly
the parameters of an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from helpers.cache import Checkpoint
from helpers.progress import progress_bar
from helpers.runtime import torch_generator

LossFn = Callable[[torch.nn.Module, Any, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


def adam(parameters, lr: float, *, decoupled: bool = False) -> torch.optim.Optimizer:
    """Adam, or AdamW (PyTorch's default weight decay 0.01) when ``decoupled``, with the fused kernel.

    The fused step updates every tensor in one pass instead of about a dozen small operations per tensor: for
    the 243 tensors of notebook 04's UNet it takes ~2.5 ms instead of ~14 ms on 2 CPU cores. Its updates agree
    with the per-tensor loop to float rounding.
    """
    optimizer = torch.optim.AdamW if decoupled else torch.optim.Adam
    return optimizer(parameters, lr=lr, fused=True)


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    make_batch: Callable[[int, torch.Generator], Any],
    num_steps: int,
    *,
    seed: int,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 250,
    grad_clip: float | None = None,
    lr_schedule: Callable[[int], float] | None = None,
    desc: str = "train",
) -> dict[str, list[float]]:
    """Train ``model`` in place for ``num_steps`` steps and return the logged history.

    Args:
        model: the module to train (already on its device).
        optimizer: its optimiser.
        loss_fn: ``(model, batch, generator) -> (loss, logs)``; ``logs`` maps names to floats.
        make_batch: ``(step, generator) -> batch``.
        num_steps: total number of optimisation steps.
        seed: seeds the per-step generators.
        checkpoint: where to save and resume from (see :func:`helpers.cache.load_or_train`).
        checkpoint_every: steps between checkpoints.
        grad_clip: clip the gradient norm to this value.
        lr_schedule: multiplies each parameter group's initial learning rate at every step.
        desc: progress-bar label.

    Returns:
        ``{log name: [value per step]}`` for every step from 0 to ``num_steps - 1``.
    """
    if num_steps < 1 or checkpoint_every < 1:
        raise ValueError(f"num_steps and checkpoint_every must be >= 1, got {num_steps}, {checkpoint_every}")
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    history: dict[str, list[float]] = {}
    start = 0
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start = state["history"], state["step"]
    model.train()
    progress = progress_bar(range(start, num_steps), desc=desc, initial=start, total=num_steps, mininterval=2.0)
    for step in progress:
        generator = torch_generator(seed, step)
        if lr_schedule is not None:
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * lr_schedule(step)
        loss, logs = loss_fn(model, make_batch(step, generator), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        loss_value = loss.item()
        for name, value in {"loss": loss_value, **logs}.items():
            history.setdefault(name, []).append(float(value))
        progress.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
        done = step + 1
        if checkpoint is not None and (done % checkpoint_every == 0 or done == num_steps):
            checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "history": history, "step": done})
    progress.close()
    model.eval()
    return history
