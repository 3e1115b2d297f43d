"""On-the-fly training inside AMPTorch's AtomsTrainer (runs where AMPTorch is installed):
same losses and predictions as the stored path, checkpoints, AMPTorch's own data sets,
bad configs and frames named, Ctrl-C."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

pytest.importorskip("amptorch.trainer", reason="AMPTorch is not installed (see README: 'Comparing with AMPTorch')")

import ase.io  # noqa: E402
import torch  # noqa: E402
from amptorch.dataset import AtomsDataset  # noqa: E402
from amptorch.preprocessing import FeatureScaler as TheirFeatureScaler  # noqa: E402
from amptorch.preprocessing import TargetScaler as TheirTargetScaler  # noqa: E402
from amptorch.trainer import AtomsTrainer  # noqa: E402

import fastfp.amptorch  # noqa: E402
from conftest import SHARED, requires_shared  # noqa: E402
from fastfp.amptorch.onthefly import OnTheFlyDataset  # noqa: E402
from fastfp.frames import FrameError  # noqa: E402
from fastfp.gpu.device import DeviceError, simulated  # noqa: E402

pytestmark = requires_shared
OC20 = SHARED / "data" / "oc20_300_test.traj"


@pytest.fixture(scope="module")
def frames():
    """24 training frames, then 3 new ones with no element the training frames lack."""
    frames = ase.io.read(OC20, ":30")
    return frames[:24] + [frames[k] for k in (24, 25, 28)]


@pytest.fixture(autouse=True)
def installed(monkeypatch):
    monkeypatch.chdir(os.getcwd())  # back here afterwards: AtomsTrainer changes into its run_dir
    previous = torch.get_default_dtype()
    fastfp.amptorch.install()
    yield
    fastfp.amptorch.uninstall()
    torch.set_default_dtype(previous)


def config(frames, run_dir, identifier, on_the_fly, epochs=3, val_split=0.0, debug=False):
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    params = {"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": [0.4, 0.8, 1.2, 1.6, 2.0]}, "cutoff": 8.0,
              "prime_threshold": 0,
              "atom_gaussians": {el: str(SHARED / "gmp" / "psp_v3" / f"{el}_pseudodensity.g") for el in elements}}
    dataset = {"raw_data": list(frames), "val_split": val_split, "fp_scheme": "gmpordernorm", "fp_params": params,
               "elements": elements, "save_fps": False}
    if on_the_fly:
        dataset["on_the_fly"] = True
    return {
        "model": {"name": "singlenn", "get_forces": True, "num_layers": 3, "num_nodes": 20},
        "optim": {"device": "cpu", "force_coefficient": 0.05, "lr": 1e-2, "batch_size": 8, "epochs": epochs},
        "dataset": dataset,
        # not debug: AMPTorch records the descriptor (for predict) and checkpoints only then
        "cmd": {"debug": debug, "run_dir": str(run_dir), "seed": 1, "identifier": identifier, "verbose": False,
                "logger": False},
    }


def trained(frames, run_dir, identifier, on_the_fly, **options):
    return _train(config(frames, run_dir, identifier, on_the_fly, **options))


def history(trainer, key):
    return np.array([h[key] for h in trainer.net.history])


@pytest.mark.parametrize("val_split", [0.0, 0.25])
def test_same_losses_scalers_and_predictions_as_stored(frames, tmp_path, val_split, monkeypatch):
    train, new = frames[:24], frames[24:]
    stored = trained(train, tmp_path, "stored", False, val_split=val_split)
    ours = trained(train, tmp_path, "onthefly", True, val_split=val_split)
    assert isinstance(stored.train_dataset, AtomsDataset) and isinstance(ours.train_dataset, OnTheFlyDataset)
    assert len(ours.net.history) == 3
    for key in ["train_loss", "train_energy_mae", "train_forces_mae"] + (
            ["valid_loss", "val_energy_mae", "val_forces_mae"] if val_split else []):
        np.testing.assert_allclose(history(ours, key), history(stored, key), rtol=1e-6, err_msg=key)
    # AMPTorch's scaler classes, fitted alike (AMPTorch's __eq__: torch.equal on every tensor)
    assert type(ours.feature_scaler) is TheirFeatureScaler and type(ours.target_scaler) is TheirTargetScaler
    assert ours.feature_scaler == stored.feature_scaler
    assert ours.target_scaler == stored.target_scaler
    expect = stored.predict(new)
    got = ours.predict(new)
    np.testing.assert_allclose(got["energy"], expect["energy"], rtol=1e-6)
    for a, b in zip(got["forces"], expect["forces"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    # the checkpoint is AMPTorch's: a fresh trainer loads it and predicts the same. AMPTorch's
    # load_pretrained predates torch 2.6's weights_only default (on either path): allow pickles
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    normalizers = torch.load(os.path.join(ours.cp_dir, "normalizers.pt"))
    assert normalizers["feature"] == ours.feature_scaler
    loaded = AtomsTrainer()
    loaded.load_pretrained(ours.cp_dir)
    again = loaded.predict(new)
    np.testing.assert_allclose(again["energy"], got["energy"], rtol=1e-12)


def test_recomputed_derivatives_train_as_stored_blocks(frames, tmp_path):
    """``config["dataset"]["fastfp_fprimes"]``: "recomputed" (derivatives recomputed in the
    force contraction) and "blocks" (stored) give the same 3 epochs, to 1e-8; the
    default is "auto"."""
    from fastfp.amptorch.forces import DerivativeBlocks, RecomputedDerivatives

    train = frames[:16]
    trainers = {}
    for fprimes in ("blocks", "recomputed"):
        options = config(train, tmp_path, fprimes, True)
        options["dataset"]["fastfp_fprimes"] = fprimes
        trainers[fprimes] = _train(options)
    blocks, recomputed = trainers["blocks"], trainers["recomputed"]
    assert blocks.train_dataset.fprimes == "blocks" and recomputed.train_dataset.fprimes == "recomputed"
    assert trained(train, tmp_path, "default", True, epochs=1).train_dataset.fprimes == "auto"
    assert isinstance(recomputed.train_dataset.batch([0, 1]).fprimes, RecomputedDerivatives)
    assert isinstance(blocks.train_dataset.batch([0, 1]).fprimes, DerivativeBlocks)
    for key in ("train_loss", "train_energy_mae", "train_forces_mae"):
        np.testing.assert_allclose(history(recomputed, key), history(blocks, key), rtol=1e-8, err_msg=key)


def test_amptorch_lmdb_still_trains_under_install(frames, tmp_path):
    from fastfp.amptorch.lmdb import write_lmdb

    setup = config(frames[:6], tmp_path, "lmdb", False)["dataset"]
    torch.set_default_dtype(torch.float64)
    write_lmdb(frames[:6], {"fp_scheme": "gmpordernorm", "fp_params": setup["fp_params"]}, tmp_path / "d.lmdb",
               progress=False)
    options = config(frames[:6], tmp_path, "lmdb", False, epochs=2, debug=True)
    options["dataset"] = {"lmdb_path": [str(tmp_path / "d.lmdb")], "val_split": 0}
    trainer = _train(options)
    assert not isinstance(trainer.train_dataset, OnTheFlyDataset)
    assert np.isfinite(history(trainer, "train_loss")).all()


def _store_config(frames, tmp_path, identifier, **options):
    """AtomsTrainer's config training from a fastfp store of ``frames`` (same settings)."""
    from fastfp.config import resolve_config
    from fastfp.store import featurize_to_store

    options = config(frames, tmp_path, identifier, False, **options)
    dataset = options["dataset"]
    path = tmp_path / f"{identifier}.store"
    featurize_to_store(list(frames), resolve_config({k: dataset[k] for k in ("fp_scheme", "fp_params", "elements")}),
                       path, shard_frames=7)
    options["dataset"] = {"fastfp_store": str(path), "val_split": dataset["val_split"]}
    return options


def _train(options):
    trainer = AtomsTrainer(options)
    trainer.train()
    return trainer


def test_training_from_a_store_equals_the_in_memory_path(frames, tmp_path):
    """``config["dataset"]["fastfp_store"]``: the same losses, metrics and scalers as
    AtomsDataset on the frames the store was written from (frames in which AMPTorch's
    neighbour search misses no pair: elsewhere the store, which is exact, and the
    drop-in, which reproduces AMPTorch's misses, differ)."""
    from fastfp.amptorch.onthefly import StoreDataset
    from fastfp.frames import pack_frames
    from fastfp.neighbors import neighbor_pairs

    def misses(atoms):
        packed = pack_frames([atoms], np.unique(atoms.numbers))
        return len(neighbor_pairs(packed, 8.0).j) != len(neighbor_pairs(packed, 8.0, amptorch_binning=True).j)

    train = [a for a in frames[:24] if not misses(a)]
    assert len(train) >= 18
    stored = trained(train, tmp_path, "stored", False, val_split=0.25)
    ours = _train(_store_config(train, tmp_path, "fromstore", val_split=0.25))
    assert isinstance(ours.train_dataset, StoreDataset) and len(ours.train_dataset) == len(train)
    for key in ("train_loss", "train_energy_mae", "train_forces_mae", "valid_loss", "val_energy_mae",
                "val_forces_mae"):
        np.testing.assert_allclose(history(ours, key), history(stored, key), rtol=1e-6, err_msg=key)
    assert ours.feature_scaler == stored.feature_scaler and ours.target_scaler == stored.target_scaler
    np.testing.assert_allclose(ours.predict(frames[24:])["energy"], stored.predict(frames[24:])["energy"], rtol=1e-6)


def test_a_store_with_other_settings_or_frames_is_refused(frames, tmp_path):
    from fastfp.store import StoreError

    options = _store_config(frames[:4], tmp_path, "refused", debug=True)
    other = config(frames[:4], tmp_path, "x", False)["dataset"]
    other["fp_params"]["cutoff"] = 6.0
    options["dataset"].update(fp_scheme="gmpordernorm", fp_params=other["fp_params"])
    with pytest.raises(StoreError, match=r"different descriptor settings \(differing: fp_params.cutoff\)"):
        _train(options)
    options = _store_config(frames[:4], tmp_path, "refused2", debug=True)
    options["dataset"]["raw_data"] = frames[:4]
    with pytest.raises(ValueError, match="'raw_data'"):
        _train(options)


@pytest.mark.parametrize("change, key", [
    (lambda c: c["dataset"].update(on_the_fly="yes"), "on_the_fly"),
    (lambda c: c["dataset"].update(fp_scheme="soap"), "fp_scheme"),
    (lambda c: c["dataset"]["fp_params"].update(log=True), "log"),
    (lambda c: c["dataset"]["fp_params"].update(prime_threshold=1e-5), "prime_threshold"),
    (lambda c: c["dataset"]["fp_params"].update(sigma=[1.0]), "sigma"),
    (lambda c: c["dataset"].update(val_spilt=0.1), "val_spilt"),
    (lambda c: c["dataset"].update(lmdb_path=["x.lmdb"]), "lmdb_path"),
    (lambda c: c["dataset"].update(scaling={"type": "minmax"}), "scaling"),
    (lambda c: c["optim"].update(gpus=2), "gpus"),
    (lambda c: c["dataset"].update(fastfp_fprimes="coo"), "fastfp_fprimes"),
    (lambda c: c["dataset"].update(fastfp_fprimes="blocks", on_the_fly=False), "fastfp_fprimes"),
])
def test_unsupported_settings_name_the_key(frames, tmp_path, change, key):
    options = config(frames[:4], tmp_path, "bad", True, debug=True)
    change(options)
    with pytest.raises(ValueError, match=f"'{key}'"):
        AtomsTrainer(options).train()


@pytest.mark.skipif(simulated(), reason="NUMBA_ENABLE_CUDASIM is set in this process")
def test_a_gpu_without_cupy_is_a_clear_error_not_a_cpu_fallback(frames, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    options = config(frames[:4], tmp_path, "gpu", True, debug=True)
    options["optim"]["gpus"] = 1
    with pytest.raises(DeviceError, match=r"'gpus'\] = 1 with 'on_the_fly' featurizes on the GPU: "
                                          r"device='cuda' needs CuPy, which is not installed"):
        AtomsTrainer(options).train()


def test_bad_frames_name_their_index(frames, tmp_path):
    broken = [a.copy() for a in frames[:8]]
    for a, b in zip(broken, frames):
        a.calc = b.calc
    broken[5].positions[2] = np.nan
    # at setup: packing the frames
    with pytest.raises(FrameError, match=r"frame 5: non-finite"):
        AtomsTrainer(config(broken, tmp_path, "nan", True, debug=True)).train()
    # in the middle of an epoch: a frame that went bad after the scalers were fitted
    trainer = AtomsTrainer(config(frames[:8], tmp_path, "mid", True, debug=True))
    trainer.load()
    dataset = trainer.train_dataset
    dataset.frames.frames.numbers[dataset.frames.frames.offsets[6]] = 79
    with pytest.raises(FrameError, match=r"frame 6: element\(s\) \['Au'\] not in"):
        trainer.net.fit(dataset, None)
    assert not [t for t in threading.enumerate() if t.name.startswith("fastfp-ahead")]


SCRIPT = """
import sys
import ase.io
import fastfp.amptorch
from amptorch.trainer import AtomsTrainer
from fastfp.amptorch import onthefly

fastfp.amptorch.install()
batch = onthefly.OnTheFlyDataset.batch

def announced(self, indices):
    print("batch", flush=True)
    return batch(self, indices)

onthefly.OnTheFlyDataset.batch = announced
config = {config!r}
config["dataset"]["raw_data"] = ase.io.read({path!r}, ":16")
AtomsTrainer(config).train()
print("train returned", flush=True)
"""


def test_ctrl_c_stops_training_and_leaves_nothing_running(frames, tmp_path):
    psutil = pytest.importorskip("psutil", reason="needs psutil (the 'bench' extra) to list child processes")
    options = config(frames[:16], tmp_path, "sigint", True, epochs=10_000, debug=True)
    del options["dataset"]["raw_data"]
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT).format(config=options, path=str(OC20)))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    try:
        batches = 0
        while batches < 6:  # well into training
            line = process.stdout.readline()
            assert line, f"training script ended early: {process.stderr.read()[-2000:]}"
            batches += line.strip() == "batch"
        children = psutil.Process(process.pid).children(recursive=True)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        start = time.monotonic()
        out, err = process.communicate(timeout=30)
        elapsed = time.monotonic() - start
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    # skorch ends fit() on KeyboardInterrupt; the script goes on and exits normally
    assert process.returncode == 0, err[-2000:]
    assert "train returned" in out
    assert elapsed < 10
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
