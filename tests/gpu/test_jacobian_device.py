"""Derivatives recomputed on the GPU (:class:`fastfp.gpu.jacobian.DeviceJacobian`, the
descriptor kernels' product modes) against the CPU's stored derivative blocks, in float64 to
1e-10: the products J^T x and J x, the forces and their backward through
``MinusProduct``, gradcheck and gradgradcheck.

Small frames: numba's CUDA simulator runs every GPU thread in Python (about a second per
product here)."""

import numpy as np
import pytest

from fastfp.frames import pack_frames
from fastfp.gpu.device import array_module
from fastfp.gpu.frames import to_device
from fastfp.gpu.jacobian import DeviceJacobian
from gpu_cases import assert_agree, descriptor, frames, requires_device

pytestmark = requires_device
RTOL = 1e-10
#: the frames: periodic (triclinic, images of the centre), a molecule, a lone atom (no pairs)
BATCH = ("periodic triclinic", "molecule", "single atom")


def _jacobians(name, directory, batch=BATCH):
    """``(descriptor, its CPU featurization with blocks, DeviceJacobian)`` of the frames ``batch``."""
    desc = descriptor(name, directory)
    atoms = [frames()[k] for k in batch]
    packed = pack_frames(atoms, desc.numbers)
    return desc, desc.featurize(atoms), DeviceJacobian(desc, to_device(array_module(), packed))


def _blocks_product(cpu, x, transpose):
    """J^T x ((n_atoms, n_features) -> (n_atoms, 3)) or, with ``transpose``, J x, from the
    CPU's stored blocks."""
    n_atoms = len(cpu.fprime_ptr) - 1
    centre = np.repeat(np.arange(n_atoms), np.diff(cpu.fprime_ptr))
    if transpose:
        out = np.zeros((n_atoms, cpu.fprimes.shape[1]))
        np.add.at(out, centre, np.einsum("bfc,bc->bf", cpu.fprimes, x[cpu.fprime_j]))
    else:
        out = np.zeros((n_atoms, 3))
        np.add.at(out, cpu.fprime_j, np.einsum("bfc,bf->bc", cpu.fprimes, x[centre]))
    return out


def _assert_close(got, expected, what):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(got), expected, rtol=RTOL, atol=RTOL * scale, err_msg=what)


@pytest.mark.parametrize("name", ["GMPOrderNorm", "GMP linear and sqrt", "Gaussian cosine G2 G4"])
def test_recomputed_products_equal_the_stored_blocks(tmp_path, name):
    desc, cpu, jac = _jacobians(name, tmp_path)
    assert_agree(jac.fingerprints(), desc.featurize([frames()[k] for k in BATCH], derivatives=False), where=name)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(jac.n_atoms, desc.n_features))
    _assert_close(jac.transposed_product(x), _blocks_product(cpu, x, False), f"{name}: J^T x")
    v = rng.normal(size=(jac.n_atoms, 3))
    _assert_close(jac.product(v), _blocks_product(cpu, v, True), f"{name}: J x")
    with pytest.raises(ValueError, match=r"x has shape \(11, 3\), expected \(11, "):
        jac.transposed_product(v)


def test_forces_and_their_backward_through_minus_product(tmp_path):
    torch = pytest.importorskip("torch")
    from fastfp.amptorch.forces import DerivativeBlocks, RecomputedDerivatives, contract_forces

    desc, cpu, jac = _jacobians("GMPOrderNorm", tmp_path)
    device = torch.device(DeviceJacobian.device)
    generator = torch.Generator().manual_seed(5)
    factor = torch.rand((jac.n_atoms, desc.n_features - 1), generator=generator, dtype=torch.float64) + 0.5
    gradients = torch.randn(factor.shape, generator=generator, dtype=torch.float64)
    weights = torch.randn((jac.n_atoms, 3), generator=generator, dtype=torch.float64)
    blocks = DerivativeBlocks(cpu.fprime_ptr, cpu.fprime_j, np.ascontiguousarray(cpu.fprimes[:, :-1]), factor)
    recomputed = RecomputedDerivatives(jac, factor.to(device))
    results = []
    for fprimes, where in ((blocks, "cpu"), (recomputed, device)):
        g = gradients.to(where).requires_grad_()
        forces = contract_forces(fprimes, g)
        (forces * weights.to(where)).sum().backward()  # the force loss's gradient: J v
        results.append((forces.detach().cpu().numpy(), g.grad.cpu().numpy()))
    (f_blocks, g_blocks), (f_rec, g_rec) = results
    _assert_close(f_rec, f_blocks, "forces")
    _assert_close(g_rec, g_blocks, "gradient of the force loss")
    with pytest.raises(ValueError, match="factor has shape"):
        RecomputedDerivatives(jac, torch.ones((jac.n_atoms + 1, 2), dtype=torch.float64, device=device))


def test_gradcheck_and_gradgradcheck(tmp_path):
    torch = pytest.importorskip("torch")
    from fastfp.amptorch.forces import RecomputedDerivatives, contract_forces

    desc, _, jac = _jacobians("GMP linear and sqrt", tmp_path, ("molecule",))
    device = torch.device(DeviceJacobian.device)
    factor = torch.full((jac.n_atoms, desc.n_features), 0.7, dtype=torch.float64, device=device)
    derivatives = RecomputedDerivatives(jac, factor)
    gradients = torch.randn(factor.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gradients = gradients.to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda g: contract_forces(derivatives, g), (gradients,), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda g: contract_forces(derivatives, g) ** 2, (gradients,), fast_mode=True)

