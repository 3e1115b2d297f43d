"""On-the-fly training on the device (``OnTheFlyDataset(..., device="cuda")``, what
AtomsTrainer gets with ``config["optim"]["gpus"] = 1``) against the CPU path, in float64
to 1e-10: scalers, scaled batches, forces from given gradients, the loss and gradients
of a training step, and an epoch on the background loader; with derivative blocks on
the device (its default) and recomputed there (``fprimes="recomputed"``, against the
CPU's stored blocks).

On a GPU the device batches are CUDA tensors; in numba's CUDA simulator the same code
runs on NumPy arrays handed to CPU tensors (tests/test_gpu.py).
"""

import copy
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric", reason="could not import 'torch_geometric' (the 'torch' extra)")

from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from conftest import write_pseudodensities  # noqa: E402
from fastfp.amptorch import Gaussian, GMPOrderNorm  # noqa: E402
from fastfp.amptorch.forces import RecomputedDerivatives, contract_forces  # noqa: E402
from fastfp.amptorch.model import energy_and_forces, singlenn_atomic_energies  # noqa: E402
from fastfp.amptorch.onthefly import AheadLoader, OnTheFlyDataset, check_config, collate_for_trainer  # noqa: E402
from fastfp.gpu.device import simulated  # noqa: E402
from gpu_cases import ELEMENTS, frames, requires_device  # noqa: E402

pytestmark = [requires_device, pytest.mark.usefixtures("float64")]
RTOL = 1e-10
FORCE_COEFFICIENT = 0.05  # AMPTorch's CustomLoss with the harness's coefficient
#: where device batches live: the GPU, or the CPU under the simulator
DEVICE = torch.device("cpu") if simulated() else torch.device("cuda", 0)


def labelled_frames():
    """The GPU test frames (periodic triclinic, cells smaller than the cutoff, mixed pbc,
    a molecule, a single atom) with seeded energies (eV) and forces (eV/Å)."""
    rng = np.random.default_rng(11)
    out = []
    for atoms in frames().values():
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal(-3.0, 1.0) * len(atoms)),
                                           forces=rng.normal(size=(len(atoms), 3)))
        out.append(atoms)
    return out


def _descriptor(name, directory):
    gaussians = write_pseudodensities(
        directory, {el: [(1.5 + k, 0.8 + 0.3 * k), (-0.4, 3.0 + k)] for k, el in enumerate(ELEMENTS)})
    if name == "gmpordernorm":
        return GMPOrderNorm({"MCSHs": {"orders": [0, 1, 2], "sigmas": [0.5, 1.0]}, "cutoff": 3.5,
                             "atom_gaussians": gaussians}, ELEMENTS)
    # fewer features for H than for the others: rows are cut to the widest element present
    return Gaussian({"default": {"G2": {"etas": [0.5, 4.0], "rs_s": [0.0, 1.2]},
                                 "G4": {"etas": [0.3], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]}, "cutoff": 3.5},
                     "H": {"G2": {"etas": [1.0], "rs_s": [0.0]}, "cutoff": 3.0}}, ELEMENTS)


CASES = {
    "gmpordernorm": {"type": "normalize", "range": (0, 1), "elementwise": True},
    "gaussian": {"type": "standardize", "elementwise": False},
}


def datasets(name, directory, fprimes=None):
    """``(CPU, device)`` on-the-fly data sets of :func:`labelled_frames`, the device's
    derivatives handed over as ``fprimes`` (its default: blocks) and the CPU's the other
    way."""
    desc, scaling = _descriptor(name, directory), CASES[name]
    images = labelled_frames()
    cpu_fprimes = "blocks" if fprimes == "recomputed" else "recomputed"
    return (OnTheFlyDataset(images, desc, forcetraining=True, scaling=scaling, progress=False, fprimes=cpu_fprimes),
            OnTheFlyDataset(images, desc, forcetraining=True, scaling=scaling, progress=False, device="cuda",
                            fprimes=fprimes))


def assert_close(device_value, cpu_value, what):
    """``device_value`` (on :data:`DEVICE`) equals ``cpu_value`` to :data:`RTOL` of each
    value or of the largest magnitude (sums that cancel round relative to their terms)."""
    assert device_value.device == DEVICE, what
    scale = cpu_value.abs().max().item() if cpu_value.numel() else 0.0
    torch.testing.assert_close(device_value.cpu(), cpu_value, rtol=RTOL, atol=RTOL * scale, msg=what)


class SingleNN(torch.nn.Module):
    """AMPTorch's SingleNN (``amptorch/model.py``): one MLP for all elements, Tanh
    layers, summed to per-image energies by fastfp's forward."""

    get_forces = True

    def __init__(self, input_dim, layers=3, nodes=20):
        super().__init__()
        sizes = [input_dim] + [nodes] * layers
        hidden = [m for a, b in zip(sizes, sizes[1:]) for m in (torch.nn.Linear(a, b), torch.nn.Tanh())]
        self.model = torch.nn.Sequential(*hidden, torch.nn.Linear(nodes, 1))

    atomic_energies = singlenn_atomic_energies
    forward = energy_and_forces


def loss_of(model, batch):
    """AMPTorch's CustomLoss (mse): 0.5 (energy loss + coefficient * force loss)."""
    energy, forces = model([batch])
    mse = torch.nn.functional.mse_loss
    return 0.5 * (mse(energy, batch.energy) + FORCE_COEFFICIENT * mse(forces, batch.forces))


@pytest.mark.parametrize("name, fprimes", [("gmpordernorm", None), ("gaussian", None),
                                           ("gmpordernorm", "recomputed"), ("gaussian", "recomputed")])
def test_device_batches_equal_the_cpu_ones(tmp_path, name, fprimes):
    cpu, device = datasets(name, tmp_path, fprimes)
    assert device.input_dim == cpu.input_dim
    assert float(device.target_scaler.target_mean) == float(cpu.target_scaler.target_mean)
    assert float(device.target_scaler.target_std) == float(cpu.target_scaler.target_std)
    theirs, ours = cpu.feature_scaler, device.feature_scaler
    tables = ([(ours.scales[z], theirs.scales[z]) for z in theirs.unique] if theirs.elementwise
              else [(ours.scale, theirs.scale)])
    assert not theirs.elementwise or ours.unique == theirs.unique
    for got, expect in tables:  # the scalers stay on the CPU (checkpoints, normalizers.pt)
        for key in ("offset", "scale"):
            torch.testing.assert_close(got[key], expect[key], rtol=RTOL, atol=RTOL * expect[key].abs().max().item())

    model = SingleNN(cpu.input_dim)
    for indices in ([0, 3, 5, 1], [4, 2]):
        b_cpu, b_dev = cpu.batch(indices), device.batch(indices)
        for key in ("fingerprint", "energy", "forces"):
            assert_close(b_dev[key], b_cpu[key], key)
        for key in ("atomic_numbers", "batch", "ptr"):
            assert b_dev[key].device == DEVICE and torch.equal(b_dev[key].cpu(), b_cpu[key]), key
        # the device blocks are torch tensors on the device (contracted by torch ops), or
        # recomputed there; the CPU's derivatives the other way
        if fprimes == "recomputed":
            assert isinstance(b_dev.fprimes, RecomputedDerivatives) and b_dev.fprimes.factor.device == DEVICE
            assert b_cpu.fprimes.fprimes.shape[0] > 0 and not b_cpu.fprimes.on_torch
        else:
            assert b_dev.fprimes.on_torch and b_dev.fprimes.fprimes.device == DEVICE
            assert isinstance(b_cpu.fprimes, RecomputedDerivatives)
        # forces from given gradients, and the transposed pass (their backward)
        gradients = torch.randn(b_cpu.fingerprint.shape, generator=torch.Generator().manual_seed(len(indices)))
        on_device = gradients.to(DEVICE, copy=True).requires_grad_()
        on_cpu = gradients.clone().requires_grad_()
        f_dev, f_cpu = contract_forces(b_dev.fprimes, on_device), contract_forces(b_cpu.fprimes, on_cpu)
        assert_close(f_dev, f_cpu, "forces from given gradients")
        weights = torch.randn(f_cpu.shape, generator=torch.Generator().manual_seed(3))
        (f_dev * weights.to(DEVICE)).sum().backward()
        (f_cpu * weights).sum().backward()
        assert_close(on_device.grad, on_cpu.grad, "backward of the force contraction")
        # one training step: loss and the gradients of the model's parameters
        m_cpu, m_dev = copy.deepcopy(model), copy.deepcopy(model).to(DEVICE)
        l_cpu, l_dev = loss_of(m_cpu, b_cpu), loss_of(m_dev, b_dev)
        assert_close(l_dev, l_cpu, "loss")
        l_cpu.backward()
        l_dev.backward()
        for (where, p_cpu), p_dev in zip(m_cpu.named_parameters(), m_dev.parameters()):
            assert_close(p_dev.grad, p_cpu.grad, f"gradient of {where}")


@pytest.mark.parametrize("fprimes", [None, "recomputed"])
def test_an_epoch_on_the_background_loader_equals_the_cpu_one(tmp_path, fprimes):
    """As AtomsTrainer runs it: AheadLoader (featurizing on its thread), shuffled
    batches, AMPTorch's collated form, Adam steps; the losses of every step agree."""
    cpu, device = datasets("gmpordernorm", tmp_path, fprimes)
    model = SingleNN(cpu.input_dim)

    def epoch(dataset, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        torch.manual_seed(5)
        losses = []
        loader = AheadLoader(dataset, batch_size=4, shuffle=True,
                             collate_fn=lambda items: collate_for_trainer(dataset, items))
        for (batch,), ((energy, forces),) in loader:
            assert energy is batch.energy and forces is batch.forces
            optimizer.zero_grad()
            loss = loss_of(model, batch)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses), model

    l_cpu, m_cpu = epoch(cpu, copy.deepcopy(model))
    l_dev, m_dev = epoch(device, copy.deepcopy(model).to(DEVICE))
    assert len(l_cpu) == 2
    assert_close(l_dev, l_cpu, "losses of the epoch's steps")
    for p_dev, p_cpu in zip(m_dev.parameters(), m_cpu.parameters()):
        assert_close(p_dev.detach(), p_cpu.detach(), "parameters after the epoch")


def test_recomputed_derivatives_on_the_device_are_allowed():
    config = {"model": {"get_forces": True}, "optim": {"gpus": 1},
              "dataset": {"raw_data": [], "fp_params": {}, "on_the_fly": True, "fastfp_fprimes": "recomputed"}}
    assert check_config(config) == "on_the_fly"


def test_atoms_trainer_with_a_gpu_builds_the_device_dataset(tmp_path):
    """AtomsTrainer's data set with ``gpus`` 1 (the hook installed by
    fastfp.amptorch.install()): on the device. AMPTorch's model needs torch's CUDA, so
    only the data set is built here."""
    pytest.importorskip("amptorch.trainer", reason="AMPTorch is not installed (see README: 'Comparing with AMPTorch')")
    from amptorch.trainer import AtomsTrainer

    import fastfp.amptorch

    desc = _descriptor("gmpordernorm", tmp_path)
    images = labelled_frames()
    config = {
        "model": {"name": "singlenn", "get_forces": True, "num_layers": 3, "num_nodes": 20},
        "optim": {"gpus": 1, "force_coefficient": 0.05, "lr": 1e-2, "batch_size": 4, "epochs": 1},
        "dataset": {"raw_data": images, "val_split": 0, "fp_scheme": "gmpordernorm", "fp_params": desc.params,
                    "elements": ELEMENTS, "save_fps": False, "on_the_fly": True},
        "cmd": {"debug": True, "run_dir": str(tmp_path), "seed": 1, "identifier": "gpu", "verbose": False,
                "logger": False},
    }
    cwd = os.getcwd()
    fastfp.amptorch.install()
    try:
        trainer = AtomsTrainer(config)
        trainer.load_config()
        trainer.load_dataset()
    finally:
        fastfp.amptorch.uninstall()
        os.chdir(cwd)
    dataset = trainer.train_dataset
    assert isinstance(dataset, OnTheFlyDataset) and dataset.device == "cuda"
    batch = dataset.batch([0, 1])
    assert batch.fingerprint.device == DEVICE and batch.fprimes.on_torch


@pytest.mark.skipif(simulated(), reason="numba's CUDA simulator has no streams")
def test_batches_featurized_on_a_side_stream_while_the_default_stream_is_busy(tmp_path):
    """The loader thread's batches are featurized on fastfp's side stream
    (fastfp.gpu.device.side_stream), overlapping the training step on the default
    stream; with the default stream busy, they still equal the CPU's."""
    cpu, device = datasets("gmpordernorm", tmp_path)
    busy = torch.rand((4096, 4096), device=DEVICE)
    for _ in range(50):  # tens of milliseconds queued on the default stream
        busy = torch.tanh(busy @ busy)
    for indices in ([0, 3, 5, 1], [4, 2]):
        b_cpu, b_dev = cpu.batch(indices), device.batch(indices)
        for key in ("fingerprint", "energy", "forces"):
            assert_close(b_dev[key], b_cpu[key], key)
        gradients = torch.randn(b_cpu.fingerprint.shape, generator=torch.Generator().manual_seed(1))
        assert_close(contract_forces(b_dev.fprimes, gradients.to(DEVICE)), contract_forces(b_cpu.fprimes, gradients),
                     "forces from given gradients")
    assert torch.isfinite(busy).all()
