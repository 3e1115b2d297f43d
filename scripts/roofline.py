"""Print the roofline of fastfp's CPU kernels on real frames (:mod:`fastfp.harness.roofline`).

For each kernel, on one thread and on the default threads: its work per pair (flops,
exp calls, bytes), its measured time, the times its work takes at the flops, memory and
exp roofs measured on this machine, the roof that binds it and its share of that roof;
then the roofs. From the repository root::

    python scripts/roofline.py --data water-metal --frames 100                  # the default workload
    python scripts/roofline.py --data ../shared/data/oc20_300_test.traj --frames 100

The asv benchmark ``roofline.Roofline`` tracks the same shares (README, "Roofline").
"""

from __future__ import annotations

import argparse

from fastfp.harness import roofline, settings, workloads
from fastfp.harness.backends import StageUnavailable


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=settings.DATA.default,
                        help="frames: a workload name or an ASE-readable file (default %(default)s)")
    parser.add_argument("--frames", type=int, default=100, help="the first N frames (default %(default)s)")
    parser.add_argument("--kernels", default=",".join(roofline.KERNELS),
                        help="comma-separated, of %(default)s")
    args = parser.parse_args(argv)
    frames = workloads.load_frames(args.data, args.frames)
    elements = workloads.describe(frames, args.data)["elements"]
    shares = []
    for kernel in args.kernels.split(","):
        try:
            run = roofline.kernel_run(kernel.strip(), frames, elements)
        except StageUnavailable as exc:
            print(f"{kernel}: not measured: {exc}")
            continue
        shares += [roofline.measure(run, threads) for threads in roofline.THREADS]
    print(f"{len(frames)} frames of {args.data}, {sum(len(a) for a in frames)} atoms, "
          f"{shares[0].work.pairs if shares else 0} pairs (the kernel's neighbour list)\n")
    print(roofline.table(shares))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
