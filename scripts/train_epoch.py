"""Time one AtomsTrainer epoch on the fly or streamed from a fastfp store, with peak memory.

The real runs of issues 12 and 13 (all 16,000 frames of the default workload), from the
repository root in AMPTorch's environment::

    python scripts/train_epoch.py --on-the-fly water-metal            # frames featurized per batch
    python scripts/train_epoch.py --store wm16000.store               # batches read from a store

On the fly, ``--fprimes blocks`` hands each batch's derivatives over as stored pair
blocks, ``--fprimes recomputed`` recomputes them in the force contraction, and the
default (``auto``) takes blocks for batches whose blocks fit
:data:`fastfp.amptorch.onthefly.BLOCKS_BYTES` (``config["dataset"]["fastfp_fprimes"]``);
``--batch-size N`` changes the batch (16): ``--batch-size 16000`` runs all 16,000 frames
as one batch, one step.

With ``--patched`` the epoch runs through AMPTorch with fastfp's patch series (its own
trainer, ``config["dataset"]["fp_backend"] = "fastfp"``, no ``fastfp.amptorch.install()``),
built by the harness from the AMPTorch checkout ``$FASTFP_AMPTORCH_SRC``
(:mod:`fastfp.harness.patched`; the script re-runs itself with it first on the path)::

    FASTFP_AMPTORCH_SRC=/path/to/amptorch python scripts/train_epoch.py --patched --on-the-fly water-metal

The model and optimiser are those of the harness's training stage
(:mod:`fastfp.harness.stages`: SingleNN 3x20, batch 16, forces on, force_coefficient
0.05, AMPTorch's default scaling); on the fly the descriptor is the benchmark's
(:func:`fastfp.harness.settings.descriptor_config`), from a store the store's. Prints the
set-up time (frames loaded or the store opened, scalers fitted, network built), the
epoch's time and training loss, and the process's peak resident memory (also as it was by
the end of the set-up: imports, frames, scalers and network), then exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--on-the-fly", metavar="FRAMES",
                        help="frames: a workload name (water-metal, water-metal:N) or an ASE-readable file")
    source.add_argument("--store", metavar="STORE", help="a fastfp store with energies, forces and derivatives")
    parser.add_argument("--fprimes", choices=("auto", "recomputed", "blocks"),
                        help="on the fly: stored blocks, derivatives recomputed in the force contraction, or auto "
                             "(the default: blocks while a batch's fit fastfp.amptorch.onthefly.BLOCKS_BYTES)")
    parser.add_argument("--batch-size", type=int, default=None, help="frames per batch (default: the harness's 16)")
    parser.add_argument("--patched", action="store_true",
                        help="train through AMPTorch with fastfp's patch series (fp_backend 'fastfp', no install()), "
                             "built from $FASTFP_AMPTORCH_SRC")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.patched:
        from fastfp.harness import patched
        from fastfp.harness.backends import PATCHES_ENV, patched_imported

        if not patched_imported():  # this process's AMPTorch is another: run again with the patched one
            here = os.path.dirname(os.path.abspath(__file__))
            os.environ.setdefault(PATCHES_ENV, os.path.join(here, os.pardir, "patches"))  # this checkout's series
            env = patched.worker_env(patched.checkout())
            os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)

    import torch
    from amptorch.trainer import AtomsTrainer

    import fastfp.amptorch
    from fastfp.frames import elements_of
    from fastfp.harness import stages, workloads

    t0 = time.perf_counter()
    run_dir = tempfile.mkdtemp(prefix="fastfp-train-")
    if args.on_the_fly:
        frames = workloads.load_frames(args.on_the_fly)
        request = stages.Request("train_epoch_on_the_fly", "fastfp", frames, elements=elements_of(frames))
        dataset = dict(stages.frames_dataset(request), on_the_fly=True)
        what = f"{len(frames)} frames of {args.on_the_fly}, on the fly"
    else:
        from fastfp.amptorch.scaling import DEFAULT_SCALING

        dataset = {"fastfp_store": os.path.abspath(args.store), "val_split": 0, "scaling": dict(DEFAULT_SCALING)}
        what = f"the store {args.store}"
    if args.fprimes:
        if not args.on_the_fly:
            parser.error("--fprimes is for --on-the-fly")
        dataset["fastfp_fprimes"] = args.fprimes
        what += f", fprimes {args.fprimes}"
    if args.patched:
        dataset["fp_backend"] = "fastfp"
        what += ", patched AMPTorch"
    config = stages.train_config(dataset, run_dir)
    if args.batch_size:
        config["optim"]["batch_size"] = args.batch_size
    torch.set_default_dtype(torch.float64)
    if not args.patched:
        fastfp.amptorch.install()
    cwd = os.getcwd()
    try:
        trainer = AtomsTrainer(config)
        with contextlib.redirect_stdout(sys.stderr):
            trainer.load()
            trainer.net.initialize()
    finally:
        os.chdir(cwd)
    setup = time.perf_counter() - t0
    setup_peak = _peak_rss()
    t0 = time.perf_counter()
    trainer.net.partial_fit(trainer.train_dataset, None, epochs=1)
    epoch = time.perf_counter() - t0
    loss = trainer.net.history[-1]["train_loss"]
    print(f"{what}: set-up {setup:.1f} s, one epoch {epoch:.1f} s (train loss {loss:.4g}), "
          f"{len(trainer.train_dataset)} frames, batch {config['optim']['batch_size']}, peak RSS {_peak_rss():.2f} GiB "
          f"({setup_peak:.2f} GiB by the end of the set-up)")
    return 0


def _peak_rss() -> float:
    """The process's peak resident memory so far, GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


if __name__ == "__main__":
    sys.exit(main())
