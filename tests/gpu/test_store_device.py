"""``fastfp featurize --device cuda``: a store written on the GPU (or in numba's CUDA
simulator) holds the CPU's store to 1e-10 (see gpu_cases.py)."""

import json

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import write_pseudodensities
from fastfp.cli import main
from fastfp.store import open_store
from gpu_cases import ELEMENTS, assert_agree, frames, requires_device

pytestmark = requires_device

CONFIGS = {
    "gmpordernorm": {"fp_scheme": "gmpordernorm",
                     "fp_params": {"MCSHs": {"orders": [0, 1, 2], "sigmas": [0.5, 1.0]}, "cutoff": 3.5}},
    "gaussian": {"fp_scheme": "gaussian",
                 "fp_params": {"default": {"G2": {"etas": [0.5, 4.0], "rs_s": [0.0, 1.2]},
                                           "G4": {"etas": [0.3], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]},
                                           "cutoff": 3.5}},
                 "cutoff_params": {"cutoff_func": "Polynomial", "gamma": 2.5}},
}


@pytest.mark.parametrize("scheme", list(CONFIGS))
def test_featurize_on_the_device_writes_the_cpu_store(tmp_path, scheme):
    rng = np.random.default_rng(5)
    labelled = []
    for atoms in frames().values():
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(len(atoms), 3)))
        labelled.append(atoms)
    ase.io.write(tmp_path / "frames.traj", labelled)
    config = dict(CONFIGS[scheme], elements=ELEMENTS)
    if scheme == "gmpordernorm":
        config["fp_params"]["atom_gaussians"] = write_pseudodensities(
            tmp_path, {el: [(1.5 + k, 0.8 + 0.3 * k), (-0.4, 3.0 + k)] for k, el in enumerate(ELEMENTS)})
    (tmp_path / "config.json").write_text(json.dumps(config))
    stores = {}
    for device in ("cpu", "cuda"):
        stores[device] = tmp_path / f"{device}.store"
        assert main(["featurize", str(tmp_path / "frames.traj"), "--config", str(tmp_path / "config.json"),
                     "--out", str(stores[device]), "--derivatives", "--device", device, "--chunk-frames", "2",
                     "--shard-frames", "4", "--quiet"]) == 0
    cpu, gpu = open_store(stores["cpu"]), open_store(stores["cuda"])
    assert (gpu.config, gpu.n_features, gpu.shard_bounds, gpu.has_labels) == \
        (cpu.config, cpu.n_features, cpu.shard_bounds, True)
    assert_agree(gpu.read_all(), cpu.read_all(), where=f"{scheme} store")
    for a, b in zip(gpu.labels(0, len(gpu)), cpu.labels(0, len(cpu))):
        np.testing.assert_array_equal(a, b)
