"""The kernels against the machine's roofs (:mod:`fastfp.harness.roofline`): each
kernel's time at the roof that binds it over its measured time, on the first (smallest)
benchmark frame count of the benchmark frames, on one thread and on the default threads."""

from fastfp.harness import roofline, workloads

from .common import FRAMES, Benchmark, _check_frames


class Roofline(Benchmark):
    """Work counted from the kernel's formulas (:mod:`fastfp.harness.work`), roofs
    measured in the same process (:mod:`fastfp.harness.roofs`), the kernel timed (the best
    of three calls): the largest of the times the work takes at the flops, memory and exp
    roofs, over the measured time. 100% is a kernel at its roof."""

    params = [list(roofline.KERNELS), list(roofline.THREADS), FRAMES[:1]]
    param_names = ["kernel", "threads", "frames"]
    unit = "share of the binding roof"
    repeat = 1
    quick = False

    def prepare(self, info, kernel, threads, frames):
        _check_frames(info, frames, "fastfp", labels=kernel.startswith("contract"))
        self.run = roofline.kernel_run(kernel, workloads.load_frames(info["source"], frames), info["elements"])

    def track_roof_share(self, info, kernel, threads, frames):
        return roofline.measure(self.run, threads).share

    track_roof_share.pretty_name = "{kernel}, {threads} thread(s): share of its binding roof"
