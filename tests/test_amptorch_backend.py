"""fastfp's AMPTorch fingerprint backend (fastfp.amptorch.backend) without AMPTorch: the
entry point patched AMPTorch finds it by, and its hooks. With AMPTorch, the hooks are
exercised through install() (tests/test_amptorch_dropin.py, test_onthefly_amptorch.py)
and through the patch series (tests/test_patches.py)."""

import tomllib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric", reason="could not import 'torch_geometric' (the 'torch' extra)")

from fastfp.amptorch import backend, collate, descriptors  # noqa: E402
from fastfp.amptorch.forces import DerivativeMatrix, contract_forces  # noqa: E402
from fastfp.harness import patched  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_the_entry_point_names_the_backend_module():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    group, name, value = patched.ENTRY_POINT
    assert project["entry-points"][group] == {name: value}
    assert value == backend.__name__ and backend.NAME == name


def test_descriptor_classes_are_fastfps():
    classes = backend.descriptor_classes()
    assert classes == {"gaussian": descriptors.Gaussian, "gmp": descriptors.GMP,
                       "gmpordernorm": descriptors.GMPOrderNorm}
    classes.clear()  # a copy
    assert backend.descriptor_classes()


def _coo(rows, cols, shape, seed):
    values = torch.tensor(np.random.default_rng(seed).normal(size=len(rows)))
    return torch.sparse_coo_tensor(torch.tensor([rows, cols]), values, shape)


def test_collated_derivatives_contract_themselves_into_forces(float64):
    matrices = [_coo([0, 1, 3, 3], [0, 4, 2, 5], (4, 6), 1), _coo([0, 2], [1, 3], (4, 6), 2)]
    collated = backend.sparse_block_diag(matrices)
    assert isinstance(collated, DerivativeMatrix)
    torch.testing.assert_close(collated.matrix.to_dense(), collate.sparse_block_diag(matrices).to_dense())
    assert collated.shape == (8, 12) and collated.to("cpu").shape == collated.shape
    gradients = torch.randn(1, 8, dtype=torch.float64, requires_grad=True)
    forces = collated.contract(gradients)
    expect = -(collated.matrix.to_dense().T @ gradients.reshape(-1)).view(-1, 3)
    torch.testing.assert_close(forces, expect)
    torch.testing.assert_close(contract_forces(collated, gradients), expect)
    forces.sum().backward()  # differentiable in dE/dG, as training needs
    torch.testing.assert_close(gradients.grad.reshape(-1), -collated.matrix.to_dense().sum(dim=1))


def test_check_config_accepts_the_backend_key():
    config = {"dataset": {"raw_data": [], "on_the_fly": True, "fp_backend": "fastfp", "fp_params": {}},
              "model": {"get_forces": True}}
    backend.check_config(config)
    config["dataset"]["lmdb_path"] = ["x.lmdb"]
    with pytest.raises(ValueError, match="'lmdb_path' is for AMPTorch's LMDB data sets"):
        backend.check_config(config)
