"""What computing the GPU's fingerprints in float32 costs in accuracy, measured on the CPU.

From the repository root::

    python scripts/fp32_error.py --frames 2000 --out reports/fp32.md

The default workload's first ``--frames`` frames (a spread over all its trajectories,
:func:`fastfp.harness.workloads.load_workload`) and the benchmark descriptor
(GMPOrderNorm, MCSH orders 0-3 x 5 sigmas, cutoff 8 Å). float64: fastfp's CPU kernels.
float32: the GPU kernel's arithmetic in float32 on the CPU, the same per-pair formulas
(:mod:`fastfp.gpu.emulate`; ``result_dtype="float32"`` on a GPU computes the same, up to
the order of its sums). Reported, each against float64:

* fingerprints and derivatives: the largest absolute error, and the largest relative to
  the largest magnitude of the frame; AMPTorch drops derivative entries below 1e-5
  (GMPOrderNorm's ``prime_threshold``), which is the bar float32 must stay under;
* forces and energies of one model (SingleNN 3x20 trained 3 epochs on float64) through
  either's scaled fingerprints and derivatives, as training contracts them;
* the training loss of 3 epochs from the same start (same weights, same batches; batch
  256, Adam, AMPTorch's loss), each on its own fingerprints and scalers.

The model trains in float64 (AtomsTrainer's dtype) on either; float32 results enter it
as float64. Needs the ``torch`` extra; no GPU, no AMPTorch.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
BATCH = 256
#: AMPTorch's GMPOrderNorm drops derivative entries smaller than this (``prime_threshold``)
AMPTORCH_THRESHOLD = 1e-5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames of the default workload (2,000)")
    parser.add_argument("--chunk", type=int, default=64, help="frames featurized at a time for the errors (64)")
    parser.add_argument("--out", type=Path, default=None, help="markdown report to write (default: print only)")
    return parser.parse_args(argv)


def float32_dataset(frames, desc):
    """An :class:`~fastfp.amptorch.onthefly.OnTheFlyDataset` of ``frames`` whose
    fingerprints are computed in float32 by :mod:`fastfp.gpu.emulate` (the scaler's
    fit included), handed to the model as float64."""
    import dataclasses

    import numpy as np

    from fastfp.amptorch.onthefly import FIT_ATOMS, OnTheFlyDataset
    from fastfp.gpu.emulate import featurize_packed

    class Float32Dataset(OnTheFlyDataset):
        def _featurize(self, packed, derivatives):
            fps = featurize_packed(self.descriptor, packed, derivatives=derivatives, real=np.float32)
            return dataclasses.replace(fps, fingerprints=fps.fingerprints.astype(np.float64),
                                       fprimes=fps.fprimes.astype(np.float64) if derivatives else None)

        def _fingerprint_parts(self):
            offsets = self.frames.frames.offsets
            start = 0
            while start < len(self):
                stop = min(len(self), max(start + 1, int(np.searchsorted(offsets, offsets[start] + FIT_ATOMS))))
                yield self._featurize(self.frames.select(range(start, stop))[0], False)
                start = stop

        def _read(self, indices):
            packed, energies, forces = self.frames.select(indices)
            return self._featurize(packed, self.forcetraining), energies, forces, None  # blocks, no Jacobian

    return Float32Dataset(frames, desc, progress=False)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np
    import torch

    from fastfp.amptorch.onthefly import OnTheFlyDataset
    from fastfp.config import build_descriptor
    from fastfp.frames import pack_frames
    from fastfp.gpu.emulate import featurize_packed
    from fastfp.harness.settings import descriptor_config
    from fastfp.harness.stages import TRAIN_OPTIM
    from fastfp.harness.training import SingleNN, train_epoch
    from fastfp.harness.workloads import load_workload

    torch.set_default_dtype(torch.float64)
    frames = load_workload("water-metal", n_frames=args.frames, progress=False)
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    config = descriptor_config("gmpordernorm", elements)
    desc = build_descriptor(config)

    # fingerprints and derivatives, frame by frame
    worst = dict(fp_abs=0.0, fp_rel=0.0, d_abs=0.0, d_rel=0.0, d_max=0.0, fp_max=0.0)
    above = 0
    entries = 0
    for start in range(0, len(frames), args.chunk):
        packed = pack_frames(frames[start : start + args.chunk], desc.numbers)
        double = desc.featurize_packed(packed)
        single = featurize_packed(desc, packed, real=np.float32)
        for k in range(double.n_frames):
            a, b = single.frame(k), double.frame(k)
            (_, _, da), (_, _, db) = a.blocks_by_atom(), b.blocks_by_atom()
            fp_err = np.abs(a.fingerprints.astype(np.float64) - b.fingerprints)
            d_err = np.abs(da.astype(np.float64) - db)
            worst["fp_abs"] = max(worst["fp_abs"], fp_err.max())
            worst["fp_rel"] = max(worst["fp_rel"], fp_err.max() / np.abs(b.fingerprints).max())
            worst["fp_max"] = max(worst["fp_max"], np.abs(b.fingerprints).max())
            worst["d_abs"] = max(worst["d_abs"], d_err.max())
            worst["d_rel"] = max(worst["d_rel"], d_err.max() / np.abs(db).max())
            worst["d_max"] = max(worst["d_max"], np.abs(db).max())
            above += int((d_err >= AMPTORCH_THRESHOLD).sum())
            entries += d_err.size

    # three epochs from the same start on each, then one model's energies and forces on both
    trained = build_descriptor(config, amptorch=True)  # the interface on-the-fly training takes
    datasets = {"float64": OnTheFlyDataset(frames, trained, progress=False), "float32": float32_dataset(frames, trained)}
    torch.manual_seed(1)
    start_model = SingleNN(datasets["float64"].input_dim)
    losses, models = {}, {}
    for name, dataset in datasets.items():
        model = copy.deepcopy(start_model)
        optimizer = torch.optim.Adam(model.parameters(), lr=TRAIN_OPTIM["lr"])
        torch.manual_seed(2)  # the same batches
        losses[name] = [train_epoch(model, optimizer, dataset, batch_size=BATCH).losses.mean().item()
                        for _ in range(EPOCHS)]
        models[name] = model
    force_abs = energy_abs = force_max = energy_max = scaled_abs = 0.0
    model = models["float64"]
    for start in range(0, len(frames), BATCH):
        indices = list(range(start, min(len(frames), start + BATCH)))
        b64, b32 = (datasets[n].batch(indices) for n in ("float64", "float32"))
        (e64, f64), (e32, f32) = model([b64]), model([b32])
        scaled_abs = max(scaled_abs, (b32.fingerprint - b64.fingerprint).abs().max().item())
        force_abs = max(force_abs, (f32 - f64).abs().max().item())
        energy_abs = max(energy_abs, (e32 - e64).abs().max().item())
        force_max = max(force_max, f64.abs().max().item())
        energy_max = max(energy_max, e64.abs().max().item())

    loss_rel = abs(losses["float32"][-1] - losses["float64"][-1]) / losses["float64"][-1]
    verdict = worst["d_abs"] < AMPTORCH_THRESHOLD and worst["fp_abs"] < AMPTORCH_THRESHOLD
    lines = [
        "# float32 against float64: the benchmark descriptor's error on the default workload", "",
        f"`scripts/fp32_error.py --frames {args.frames}`: the first {len(frames):,} frames of `water-metal`, "
        f"{sum(len(a) for a in frames):,} atoms, GMPOrderNorm (MCSH orders 0-3 x 5 sigmas, cutoff 8 Å, psp_v3). "
        "float32: the GPU kernel's per-pair formulas in float32 on the CPU (`fastfp.gpu.emulate`); float64: "
        f"fastfp's CPU kernels.", "",
        "| quantity | largest absolute error | largest relative to the frame's largest value | largest value |",
        "|---|---|---|---|",
        f"| fingerprints | {worst['fp_abs']:.2e} | {worst['fp_rel']:.2e} | {worst['fp_max']:.3g} |",
        f"| derivatives (per Å) | {worst['d_abs']:.2e} | {worst['d_rel']:.2e} | {worst['d_max']:.3g} |",
        f"| fingerprints scaled to (0, 1) per element (each set's own scaler) | {scaled_abs:.2e} | | 1 |",
        f"| energies of one model, eV (scaled) | {energy_abs:.2e} | {energy_abs / energy_max:.2e} | {energy_max:.3g} |",
        f"| forces of one model, eV/Å (scaled) | {force_abs:.2e} | {force_abs / force_max:.2e} | {force_max:.3g} |",
        "",
        f"Derivative entries whose float32 error reaches AMPTorch's threshold ({AMPTORCH_THRESHOLD:g}): "
        f"{above:,} of {entries:,}. Training loss (scaled units), mean of each epoch's steps, {EPOCHS} epochs of "
        f"batch {BATCH} from the same weights and batches: float64 "
        f"{', '.join(f'{v:.6g}' for v in losses['float64'])}; float32 {', '.join(f'{v:.6g}' for v in losses['float32'])}; "
        f"last epoch differs by {loss_rel:.1e} relative.", "",
        f"Errors of fingerprints and derivatives below AMPTorch's threshold ({AMPTORCH_THRESHOLD:g}): "
        f"**{'yes' if verdict else 'no'}**: float32 {'may be' if verdict else 'is not'} the default.", "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
