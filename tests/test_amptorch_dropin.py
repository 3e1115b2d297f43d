"""fastfp.amptorch.install() inside AMPTorch itself (runs where AMPTorch is installed)."""

import contextlib

import numpy as np
import pytest

pytest.importorskip("amptorch.trainer", reason="AMPTorch is not installed (see README: 'Comparing with AMPTorch')")

import ase.io  # noqa: E402
import torch  # noqa: E402
from amptorch.dataset import AtomsDataset  # noqa: E402
from amptorch.trainer import AtomsTrainer  # noqa: E402

import fastfp.amptorch  # noqa: E402
from conftest import SHARED, requires_shared  # noqa: E402

pytestmark = requires_shared


@pytest.fixture(scope="module")
def frames():
    return ase.io.read(SHARED / "data" / "oc20_300_test.traj", ":24")


def fp_params(frames):
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    return elements, {
        "MCSHs": {"orders": [0, 1, 2, 3], "sigmas": [0.4, 0.8, 1.2, 1.6, 2.0]},
        "cutoff": 8.0,
        "atom_gaussians": {el: str(SHARED / "gmp" / "psp_v3" / f"{el}_pseudodensity.g") for el in elements},
    }


@pytest.fixture
def installed():
    fastfp.amptorch.install()
    yield
    fastfp.amptorch.uninstall()


def dataset(frames):
    elements, params = fp_params(frames)
    return AtomsDataset(frames, ("gmpordernorm", params, {}, elements), forcetraining=True, save_fps=False,
                        scaling={"type": "normalize", "range": (0, 1), "elementwise": True})


def test_import_alone_changes_nothing(frames):
    import amptorch.dataset

    assert amptorch.dataset.GMPOrderNorm.__module__.startswith("amptorch")


def test_dataset_same_with_and_without_install(frames):
    torch.set_default_dtype(torch.float64)
    theirs = dataset(frames)
    fastfp.amptorch.install()
    try:
        ours = dataset(frames)
    finally:
        fastfp.amptorch.uninstall()
    assert type(ours.descriptor).__module__ == "fastfp.amptorch.descriptors"
    assert ours.feature_scaler.unique == theirs.feature_scaler.unique
    for z, scales in theirs.feature_scaler.scales.items():
        for key in ("scale", "offset"):
            torch.testing.assert_close(ours.feature_scaler.scales[z][key], scales[key], rtol=1e-9, atol=1e-12)
    for a, b in zip(ours.data_list, theirs.data_list):
        torch.testing.assert_close(a.fingerprint, b.fingerprint, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(a.fprimes.to_dense(), b.fprimes.to_dense(), rtol=0, atol=1e-4)
        torch.testing.assert_close(a.forces, b.forces)
        assert float(a.energy) == pytest.approx(float(b.energy), rel=1e-12)


def train_losses(frames, run_dir, epochs=3):
    elements, params = fp_params(frames)
    run_dir.mkdir()
    torch.set_default_dtype(torch.float64)
    config = {
        "model": {"name": "singlenn", "get_forces": True, "num_layers": 3, "num_nodes": 20},
        "optim": {"device": "cpu", "force_coefficient": 0.05, "lr": 1e-2, "batch_size": 16, "epochs": epochs},
        "dataset": {"raw_data": list(frames), "val_split": 0, "fp_scheme": "gmpordernorm", "fp_params": params,
                    "elements": elements, "save_fps": False},
        "cmd": {"debug": True, "run_dir": str(run_dir), "seed": 1, "identifier": "test", "verbose": False,
                "logger": False},
    }
    trainer = AtomsTrainer(config)
    trainer.train()
    return np.array([h["train_loss"] for h in trainer.net.history])


def test_training_losses_same_with_and_without_install(frames, tmp_path):
    theirs = train_losses(frames, tmp_path / "amptorch")
    fastfp.amptorch.install()
    try:
        ours = train_losses(frames, tmp_path / "fastfp")
    finally:
        fastfp.amptorch.uninstall()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)


def test_stored_blocks_train_and_predict_as_coo(frames, tmp_path, installed, monkeypatch):
    """The data set holds pair blocks (fastfp.amptorch.frame_blocks) where it held COO
    matrices: the same losses, validation losses and predictions (AMPTorch's 1e-5
    derivative threshold applied to both), and checkpoints as before."""
    from fastfp.amptorch import backend
    from fastfp.amptorch.frame_blocks import FrameBlocks

    elements, params = fp_params(frames)
    torch.set_default_dtype(torch.float64)
    monkeypatch.chdir(tmp_path)  # AtomsTrainer changes into its run_dir

    def train(identifier):
        config = {
            "model": {"name": "singlenn", "get_forces": True, "num_layers": 3, "num_nodes": 20},
            "optim": {"device": "cpu", "force_coefficient": 0.05, "lr": 1e-2, "batch_size": 8, "epochs": 3},
            "dataset": {"raw_data": list(frames[:20]), "val_split": 0.25, "fp_scheme": "gmpordernorm",
                        "fp_params": params, "elements": elements, "save_fps": False},
            "cmd": {"debug": False, "run_dir": str(tmp_path), "seed": 1, "identifier": identifier, "verbose": False,
                    "logger": False},
        }
        trainer = AtomsTrainer(config)
        trainer.train()
        return trainer

    blocks = train("blocks")
    with monkeypatch.context() as m:
        m.setattr(backend, "blocks_in_data", contextlib.nullcontext)  # the COO matrices AMPTorch's path holds
        coo = train("coo")
    assert isinstance(blocks.train_dataset.data_list[0].fprimes, FrameBlocks)
    assert coo.train_dataset.data_list[0].fprimes.is_sparse
    for key in ("train_loss", "valid_loss", "train_forces_mae", "val_forces_mae"):
        np.testing.assert_allclose([h[key] for h in blocks.net.history], [h[key] for h in coo.net.history],
                                   rtol=1e-10, err_msg=key)
    new = frames[20:]
    ours, theirs = blocks.predict(new), coo.predict(new)
    np.testing.assert_allclose(ours["energy"], theirs["energy"], rtol=1e-10)
    for a, b in zip(ours["forces"], theirs["forces"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # AMPTorch's load_pretrained predates torch 2.6
    loaded = AtomsTrainer()
    loaded.load_pretrained(blocks.cp_dir)
    np.testing.assert_allclose(loaded.predict(new)["energy"], ours["energy"], rtol=1e-12)


def test_unsupported_config_names_key_and_leaves_amptorch_intact(frames, installed):
    elements, params = fp_params(frames)
    params["MCSHs"]["order"] = [0]
    with pytest.raises(ValueError, match=r"unknown parameter key\(s\) \['order'\]"):
        dataset_args = ("gmpordernorm", params, {}, elements)
        AtomsDataset(frames[:2], dataset_args, forcetraining=True, save_fps=False)
    fastfp.amptorch.uninstall()
    from amptorch.descriptor.GMPOrderNorm import GMPOrderNorm as Theirs

    import amptorch.dataset

    assert amptorch.dataset.GMPOrderNorm is Theirs
