"""Write a snapshot of the CPU kernels' results, to check later kernels against.

For each descriptor of the benchmark settings (:func:`fastfp.harness.settings.descriptor_config`)
and two frames of each of ``../shared/data/water_842.traj`` and ``oc20_300_test.traj``
(the settings for the frames' own elements), it stores the fingerprints and two
products of the derivative blocks with fixed random vectors (seed 0), J^T x and J y,
which stand for the blocks at a fraction of their size. ``tests/test_kernel_snapshot.py``
recomputes them with the current kernels and compares them to 1e-12.

The snapshot in ``tests/data/kernel_snapshot.npz`` was written by this script run in a
checkout of d7270f8, the last commit with the kernels before issue 22's (one thread)::

    git worktree add --detach ../old d7270f8
    cd ../old && FASTFP_NUM_THREADS=1 python <this checkout>/scripts/kernel_snapshot.py <this checkout>/tests/data/kernel_snapshot.npz
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

#: (file under ../shared/data, frame indices)
FRAMES = (("water_842.traj", (0, 1)), ("oc20_300_test.traj", (0, 1)))
DESCRIPTORS = ("gmpordernorm", "gmp", "gaussian")


def random_vectors(n_atoms: int, n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x (n_atoms, n_features) and y (n_atoms, 3), standard normal from ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_atoms, n_features)), rng.standard_normal((n_atoms, 3))


def products(fps) -> tuple[np.ndarray, np.ndarray]:
    """(J^T x, J y) of the derivative blocks of ``fps`` (J = d fingerprints / d
    positions) for :func:`random_vectors` x, y: J^T x[j] = sum over the blocks (i, j) of
    x[i] . block, (J y)[i] = sum over the blocks (i, j) of block . y[j]."""
    n_atoms, n_features = fps.fingerprints.shape
    x, y = random_vectors(n_atoms, n_features)
    centre = np.repeat(np.arange(n_atoms), np.diff(fps.fprime_ptr))
    jt = np.zeros((n_atoms, 3))
    np.add.at(jt, fps.fprime_j, np.einsum("bf,bfk->bk", x[centre], fps.fprimes))
    jy = np.zeros((n_atoms, n_features))
    np.add.at(jy, centre, np.einsum("bfk,bk->bf", fps.fprimes, y[fps.fprime_j]))
    return jt, jy


def frame_sets(shared: Path, shift: float = 0.0):
    """``(file name, frames, descriptor)`` for each file of :data:`FRAMES` under
    ``shared``: its frames (ASE ``Atoms``), all atoms translated by ``shift`` Å along x,
    y and z (which changes nothing but round-off), and ``descriptor(kind)``, the
    benchmark descriptor of that kind for the frames' own elements."""
    from ase.io import read

    from fastfp.config import build_descriptor
    from fastfp.harness.settings import descriptor_config

    for name, indices in FRAMES:
        frames = [read(shared / "data" / name, index=k) for k in indices]
        for atoms in frames:
            atoms.positions += shift
        elements = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()})
        yield name, frames, lambda kind, elements=elements: build_descriptor(descriptor_config(kind, elements))


def compute(shared: Path, descriptors=DESCRIPTORS, shift: float = 0.0) -> dict[str, np.ndarray]:
    """The snapshot's arrays for ``descriptors`` (of :data:`DESCRIPTORS`), keyed
    ``{descriptor}/{file}/{fingerprints|jt|jy}``, from :func:`frame_sets` ``(shared,
    shift)``."""
    out = {}
    for name, frames, descriptor in frame_sets(shared, shift):
        for kind in descriptors:
            fps = descriptor(kind).featurize(frames)
            jt, jy = products(fps)
            out[f"{kind}/{name}/fingerprints"] = fps.fingerprints
            out[f"{kind}/{name}/jt"] = jt
            out[f"{kind}/{name}/jy"] = jy
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the .npz to write")
    parser.add_argument("--shared", default=str(Path.cwd().parent / "shared"), help="../shared (default %(default)s)")
    args = parser.parse_args(argv)
    arrays = compute(Path(args.shared))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = Path(args.out)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".npz", delete=False) as tmp:
        np.savez_compressed(tmp, commit=np.array(commit), **arrays)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, out)
    print(f"wrote {out} ({len(arrays)} arrays, commit {commit[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
