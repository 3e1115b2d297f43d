"""Training AMPTorch's SingleNN on fastfp's data sets in a plain loop, without AMPTorch.

What ``AtomsTrainer`` runs in an epoch under :func:`fastfp.amptorch.install` with
``config["dataset"]["on_the_fly"]``: shuffled batches collated on
:class:`~fastfp.amptorch.onthefly.AheadLoader`'s thread in AMPTorch's
``ParallelCollater`` form, fastfp's ``SingleNN`` forward and force contraction, AMPTorch's
loss (``CustomLoss``, mse) and Adam; a loop in place of skorch's. ``scripts/gpu_check.py``
times an epoch on the GPU with it, ``scripts/fp32_error.py`` compares training on
float32 and float64 fingerprints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..amptorch.model import energy_and_forces, singlenn_atomic_energies
from ..amptorch.onthefly import AheadLoader, collate_for_trainer
from .stages import TRAIN_MODEL, TRAIN_OPTIM


class SingleNN(torch.nn.Module):
    """AMPTorch's SingleNN (``amptorch/model.py``: one MLP for all elements, Linear and
    Tanh layers, xavier-uniform weights, zero biases), with fastfp's forward."""

    get_forces = True

    def __init__(self, input_dim: int, num_layers: int = TRAIN_MODEL["num_layers"],
                 num_nodes: int = TRAIN_MODEL["num_nodes"]):
        super().__init__()
        sizes = [input_dim] + [num_nodes] * num_layers
        layers = [m for a, b in zip(sizes, sizes[1:]) for m in (torch.nn.Linear(a, b), torch.nn.Tanh())]
        self.model = torch.nn.Sequential(*layers, torch.nn.Linear(num_nodes, 1))
        for layer in self.model:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(layer.weight)
                torch.nn.init.zeros_(layer.bias)

    atomic_energies = singlenn_atomic_energies
    forward = energy_and_forces


def loss(model, batch, energy, forces, force_coefficient: float = TRAIN_OPTIM["force_coefficient"]):
    """AMPTorch's ``CustomLoss`` (mse): 0.5 (energy mse + coefficient * force mse)."""
    predicted_energy, predicted_forces = model([batch])
    mse = torch.nn.functional.mse_loss
    return 0.5 * (mse(predicted_energy, energy) + force_coefficient * mse(predicted_forces, forces))


@dataclass
class Epoch:
    """One epoch: the loss of each step (scaled units, on the CPU), its seconds, and the
    seconds of them the loop waited for the next batch."""

    losses: torch.Tensor
    seconds: float
    waited: float


def train_epoch(model, optimizer, dataset, *, batch_size: int, synchronize=lambda: None) -> Epoch:
    """One epoch over ``dataset`` (an :class:`~fastfp.amptorch.onthefly.OnTheFlyDataset`
    with force training) in batches of ``batch_size``, shuffled by torch's global random
    stream; ``synchronize`` waits for the device at the end (for the time). Raises
    ``RuntimeError`` if a loss is not finite."""
    loader = AheadLoader(dataset, batch_size=batch_size, shuffle=True,
                         collate_fn=lambda items: collate_for_trainer(dataset, items))
    losses = []
    waited = 0.0
    start = time.perf_counter()
    batches = iter(loader)
    while True:
        step = time.perf_counter()
        try:
            (batch,), ((energy, forces),) = next(batches)
        except StopIteration:
            break
        waited += time.perf_counter() - step
        value = loss(model, batch, energy, forces)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.detach())
    synchronize()
    seconds = time.perf_counter() - start
    losses = torch.stack(losses).cpu()
    if not torch.isfinite(losses).all():
        raise RuntimeError(f"losses not finite: {losses.tolist()}")
    return Epoch(losses, seconds, waited)
