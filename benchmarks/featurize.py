"""Featurization: ``prepare_fingerprints`` per descriptor, fingerprints only or with
derivatives, against the number of frames and (fastfp) the number of atoms per frame."""

from fastfp.harness import stages

from .common import ATOMS, BACKENDS, DESCRIPTORS, FRAMES, atoms_frame, bench_frames, setup_cache


class Featurize:
    """``prepare_fingerprints`` of the first N frames of the workload (AMPTorch's output
    format for both backends), 256 frames per call."""

    params = [BACKENDS, DESCRIPTORS, [False, True], FRAMES]
    param_names = ["backend", "descriptor", "derivatives", "frames"]
    setup_cache = setup_cache
    timeout = 4 * 3600
    number = 1
    repeat = (1, 3, 30.0)
    rounds = 1
    warmup_time = 0

    def setup(self, info, backend, descriptor, derivatives, frames):
        images = bench_frames(info, frames, backend)
        self.run = stages.build("featurize", backend, images, descriptor=descriptor,
                                derivatives=derivatives, elements=info["elements"])

    def time_featurize(self, info, backend, descriptor, derivatives, frames):
        self.run()


class FeaturizeAtoms:
    """Fingerprints and derivatives of one frame of about N atoms (frame 0 of the
    workload repeated in-plane: the metal slab with its water)."""

    params = [BACKENDS, DESCRIPTORS, ATOMS]
    param_names = ["backend", "descriptor", "atoms"]
    setup_cache = setup_cache
    timeout = 1800
    number = 1
    repeat = (1, 3, 30.0)
    rounds = 1
    warmup_time = 0

    def setup(self, info, backend, descriptor, atoms):
        frame = atoms_frame(info, atoms, backend)
        self.run = stages.build("featurize", backend, [frame], descriptor=descriptor, derivatives=True,
                                elements=info["elements"])

    def time_featurize_atoms(self, info, backend, descriptor, atoms):
        self.run()
