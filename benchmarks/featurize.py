"""Featurization: ``prepare_fingerprints`` per descriptor, fingerprints only or with
derivatives, against the number of frames and (fastfp) the number of atoms per frame."""

from fastfp.harness import stages

from .common import ATOMS, BACKENDS, DESCRIPTORS, FRAMES, Benchmark, atoms_frame, bench_frames


class Featurize(Benchmark):
    """``prepare_fingerprints`` of the first N frames of the workload (AMPTorch's output
    format for both backends), 256 frames per call."""

    params = [BACKENDS, DESCRIPTORS, [False, True], FRAMES]
    param_names = ["backend", "descriptor", "derivatives", "frames"]

    def setup(self, info, backend, descriptor, derivatives, frames):
        images = bench_frames(info, frames, backend)
        self.run = stages.build("featurize", backend, images, descriptor=descriptor,
                                derivatives=derivatives, elements=info["elements"])

    def time_featurize(self, info, backend, descriptor, derivatives, frames):
        self.run()


class FeaturizeAtoms(Benchmark):
    """Fingerprints and derivatives of one frame of about N atoms (frame 0 of the
    workload repeated in-plane: the metal slab with its water)."""

    params = [BACKENDS, DESCRIPTORS, ATOMS]
    param_names = ["backend", "descriptor", "atoms"]
    timeout = 1800

    def setup(self, info, backend, descriptor, atoms):
        frame = atoms_frame(info, atoms, backend)
        self.run = stages.build("featurize", backend, [frame], descriptor=descriptor, derivatives=True,
                                elements=info["elements"])

    def time_featurize_atoms(self, info, backend, descriptor, atoms):
        self.run()
