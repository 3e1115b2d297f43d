"""Featurization: ``prepare_fingerprints`` per descriptor, fingerprints only or with
derivatives, against the number of frames and the number of atoms per frame."""

from .common import ATOMS, BACKENDS, DESCRIPTORS, FRAMES, Benchmark, atoms_run, stage_run


class Featurize(Benchmark):
    """``prepare_fingerprints`` of the first N frames of the workload (AMPTorch's output
    format for both backends), 256 frames per call."""

    params = [BACKENDS, DESCRIPTORS, [False, True], FRAMES]
    param_names = ["backend", "descriptor", "derivatives", "frames"]

    def prepare(self, info, backend, descriptor, derivatives, frames):
        self.run = stage_run("featurize", info, backend, frames, descriptor=descriptor, derivatives=derivatives)

    def time_featurize(self, info, backend, descriptor, derivatives, frames):
        self.run()

    time_featurize.pretty_name = "featurize {descriptor} {derivatives} derivatives"


class FeaturizeAtoms(Benchmark):
    """Fingerprints and derivatives of one frame of about N atoms (frame 0 of the
    workload repeated in-plane: the metal slab with its water)."""

    params = [BACKENDS, DESCRIPTORS, ATOMS]
    param_names = ["backend", "descriptor", "atoms"]
    timeout = 1800

    def prepare(self, info, backend, descriptor, atoms):
        self.run = atoms_run(info, backend, atoms, descriptor)

    def time_featurize_atoms(self, info, backend, descriptor, atoms):
        self.run()

    time_featurize_atoms.pretty_name = "featurize {descriptor} with derivatives, one frame"
