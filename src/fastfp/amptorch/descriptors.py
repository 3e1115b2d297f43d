"""AMPTorch-compatible descriptor classes, backed by fastfp's kernels.

Same constructor signatures, ``descriptor_type``, ``descriptor_setup``,
``descriptor_setup_hash``, equality and ``prepare_fingerprints`` output as AMPTorch's
``amptorch/descriptor/{GMPOrderNorm,GMP,Gaussian}/__init__.py`` and
``base_descriptor.py``; AMPTorch itself is not needed to use them.

Two AMPTorch behaviours are reproduced so that numbers agree one to one:
* its neighbour search drops some pairs of atoms lying on a periodic face
  (:func:`fastfp.neighbors.amptorch_binning_mask`);
* GMPOrderNorm zeroes derivative entries with ``|value| < 1e-5``; the fp_params key
  ``"prime_threshold"`` sets that threshold here (``0`` keeps exact derivatives).
"""

from __future__ import annotations

import hashlib

import numpy as np
from tqdm.auto import tqdm

from ..descriptors import gaussian as _gaussian
from ..descriptors import gmp as _gmp
from ..frames import chunks, pack_frames
from ..threads import prefetched, single_threaded_libraries

#: atoms featurized per kernel call (``prepare_fingerprints``, ``AtomsToData``): up to
#: about 100 MB of derivative blocks (2,048 atoms x ~60-100 blocks x 480 bytes), whose
#: memory :mod:`fastfp.buffers` hands from chunk to chunk. Against 512 atoms a chunk,
#: the OC20 featurization ratio rose by about a tenth (reports/runs.md, "Fewer, larger
#: chunks"): less CPU time in all, with fewer chunks and fewer page faults for their COO
#: outputs; 4,096 atoms gained no more
CHUNK_ATOMS = 2048

#: chunks whose neighbours are searched ahead of the one being featurized: the search
#: (vesin, one frame after another, which no other thread can share) runs on its own
#: thread beside the kernels and conversions of the chunks before, on the others
CHUNKS_AHEAD = 2


class AMPTorchInterface:
    """AMPTorch's ``BaseDescriptor`` interface over a fastfp descriptor (a mixin).

    :meth:`prepare_fingerprints` and :meth:`featurized_chunks` find neighbours as AMPTorch
    does (``amptorch_binning``: :func:`fastfp.neighbors.amptorch_binning_mask`);
    ``featurize`` is fastfp's, with the complete neighbour list unless asked.
    """

    #: derivative entries with smaller magnitude are dropped from the COO output
    prime_threshold = 0.0

    def _setup_text(self) -> str:
        """AMPTorch's input of the setup hash: every number of ``descriptor_setup`` as ``%.15f``."""
        return "".join("%.15f" % v for row in self.descriptor_setup for v in row)

    def get_descriptor_setup_hash(self) -> str:
        """md5 of :meth:`_setup_text`, AMPTorch's ``descriptor_setup_hash``."""
        self.descriptor_setup_hash = hashlib.md5(self._setup_text().encode("utf-8")).hexdigest()
        return self.descriptor_setup_hash

    def __eq__(self, other):
        if hasattr(other, "descriptor_type") and hasattr(other, "descriptor_setup_hash"):
            return (
                self.descriptor_type == other.descriptor_type
                and self.descriptor_setup_hash == other.descriptor_setup_hash
            )
        return NotImplemented

    __hash__ = None

    def _get_element_list(self):
        return self.elements

    def prepare_fingerprints(self, images, calc_derivatives, save_fps=False, verbose=False, cores=1, log=None):
        """Fingerprints of ``images`` as AMPTorch's list of per-image dicts.

        Each dict has ``atomic_numbers`` (N,), ``num_atoms``, ``descriptors``
        (N, n_features), ``num_descriptors`` {element present: n_features} and, with
        ``calc_derivatives``, ``descriptor_primes`` {``row``, ``col``, ``val``, ``size``}
        in AMPTorch's COO layout and entry order. ``save_fps``, ``cores`` and ``log``
        are accepted for compatibility: fastfp recomputes instead of caching to HDF5
        (the ``fastfp featurize`` store is the cache) and runs in this process.
        """
        self._check_log(calc_derivatives)
        out = []
        bar = tqdm(total=len(images), desc="Computing fingerprints (fastfp)", disable=not verbose)
        for _, chunk, fps in self.featurized_chunks(images, derivatives=calc_derivatives):
            out.extend(self.image_dicts(fps, calc_derivatives))
            bar.update(len(chunk))
        bar.close()
        return out

    def featurized_chunks(self, images, *, derivatives):
        """``(first frame index, frames, Fingerprints)`` for chunks of about
        :data:`CHUNK_ATOMS` atoms of ``images``, in order. The neighbours of the next
        :data:`CHUNKS_AHEAD` chunks are searched on a background thread while the calling
        thread featurizes a chunk (here) and converts it (the caller), both on the threads
        of :func:`~fastfp.threads.run_ranges` (the compiled parts release the GIL). The
        large arrays (derivative blocks, the caller's output) are all made in the calling
        thread, whose allocator then reuses the memory of the chunks before. With
        ``FASTFP_NUM_THREADS=1`` everything runs in the calling thread."""
        parts = chunks(images, len(images), max_atoms=CHUNK_ATOMS)
        # the limit held here for the whole loop, the search thread's LAPACK calls included
        with single_threaded_libraries():
            for (start, chunk), searched in prefetched(lambda part: self._packed_pairs(part[1], part[0]), parts,
                                                       CHUNKS_AHEAD):
                yield start, chunk, self.featurize_pairs(*searched, derivatives=derivatives)

    def _packed_pairs(self, frames, first_index):
        """``(packed frames, their neighbour pairs)`` (:meth:`neighbor_pairs`) of ``frames``,
        numbered from ``first_index`` in errors."""
        packed = pack_frames(frames, self.numbers, first_index=first_index)
        return packed, self.neighbor_pairs(packed, amptorch_binning=True)

    def frame_outputs(self, fps, derivatives) -> list[tuple]:
        """AMPTorch's per-image outputs for every frame of the batch ``fps``, as tuples
        ``(numbers, descriptors, num_descriptors, primes)``: atomic numbers (N,),
        fingerprints (N, width) with AMPTorch's row width (the widest element present in
        the image), {element present: n_features}, and with ``derivatives`` the
        derivatives ``(indices, val, size)`` in AMPTorch's COO layout and entry order
        (``indices`` (2, nnz) int64: rows ``atom * width + feature``, columns
        ``atom * 3 + xyz``), else None."""
        per_element = self.features_per_element()
        n_features = np.array([per_element[el] for el in self.elements])
        frame_of = np.repeat(np.arange(fps.n_frames), np.diff(fps.offsets))
        species = self.species_of[fps.numbers]
        present = np.zeros((fps.n_frames, len(self.elements)), dtype=bool)
        present[frame_of, species] = True
        widths = np.where(present, n_features, 0).max(axis=1)
        primes = [None] * fps.n_frames
        if derivatives:
            # AMPTorch concatenates the elements' matrices in ``elements`` order
            atom_order = np.lexsort((species, frame_of))
            primes = fps.coo_frames(self.prime_threshold, atom_order, widths)
        out = []
        for k in range(fps.n_frames):
            a0, a1 = fps.offsets[k], fps.offsets[k + 1]
            descriptors = self.transform(fps.fingerprints[a0:a1, : widths[k]])
            num_descriptors = {self.elements[s]: per_element[self.elements[s]] for s in np.flatnonzero(present[k])}
            out.append((fps.numbers[a0:a1], descriptors, num_descriptors, primes[k]))
        return out

    def images_to_data(self, images, r_energy=True, r_forces=True, fprimes=True, disable_tqdm=False) -> list:
        """AMPTorch's ``Data`` objects of ``images`` (ASE ``Atoms`` or ``ase.db`` rows),
        converted a chunk at a time: the batched conversion AMPTorch's
        ``AtomsToData.convert_all`` asks a descriptor for
        (:func:`fastfp.amptorch.data.images_to_data`; needs torch and torch_geometric)."""
        from .data import images_to_data

        return images_to_data(self, list(images), r_energy, r_forces, fprimes, disable_tqdm)

    def image_dicts(self, fps, derivatives) -> list[dict]:
        """AMPTorch's per-image dicts for the frames of ``fps`` (see :meth:`prepare_fingerprints`)."""
        out = []
        for numbers, descriptors, num_descriptors, primes in self.frame_outputs(fps, derivatives):
            image = {
                "atomic_numbers": numbers.astype(np.intc),
                "num_atoms": len(numbers),
                "descriptors": descriptors,
                "num_descriptors": num_descriptors,
            }
            if primes is not None:
                indices, val, size = primes
                image["descriptor_primes"] = {"row": indices[0], "col": indices[1], "val": val, "size": np.array(size)}
            out.append(image)
        return out

    def transform(self, fingerprints):
        """``fingerprints`` as AMPTorch hands them on: with its ``"log"`` option
        log10(max(|fp|, 1e-8)), else unchanged (derivatives have no log form)."""
        if not self.params.get("log", False):
            return fingerprints
        return np.log10(np.maximum(np.abs(fingerprints), 1e-8))

    def _check_log(self, derivatives):
        if self.params.get("log", False) and derivatives:
            raise NotImplementedError(f"{self.descriptor_type}: 'log' fingerprints have no derivatives (as in AMPTorch)")


class GMPOrderNorm(AMPTorchInterface, _gmp.GMPOrderNorm):
    """AMPTorch's ``GMPOrderNorm(MCSHs, elements)``; see :class:`fastfp.descriptors.gmp.GMPOrderNorm`.

    AMPTorch's default cutoff is written back into ``MCSHs`` when absent.
    """

    def __init__(self, MCSHs, elements):
        super().__init__(MCSHs, elements)
        MCSHs.setdefault("cutoff", self.cutoff)  # AMPTorch writes its default cutoff into the dict
        self.prime_threshold = float(MCSHs.get("prime_threshold", 1e-5))
        square = int(bool(MCSHs.get("square", True)))
        solid = int(bool(MCSHs.get("solid_harmonics", True)))
        self.descriptor_setup = np.array(
            [
                [n, square, solid, s, 1.0, (1.0 / (s * np.sqrt(2.0 * np.pi))) ** 3, 1.0 / (2.0 * s * s),
                 self.cutoff, self.rs_setup.inverse(s)]
                for n, sigmas in self.setups
                for s in sigmas
            ]
        )
        self.get_descriptor_setup_hash()


class GMP(AMPTorchInterface, _gmp.GMP):
    """AMPTorch's ``GMP(MCSHs, elements)``; see :class:`fastfp.descriptors.gmp.GMP`.
    Its derivatives are not thresholded (as in AMPTorch)."""

    def __init__(self, MCSHs, elements):
        super().__init__(MCSHs, elements)
        self.descriptor_setup = np.array(
            [
                [n, g, s, 1.0, 1.0 / (s * np.sqrt(2.0 * np.pi)), 1.0 / (2.0 * s * s), self.cutoff,
                 self.rs_setup.inverse(s)]
                for n, g, sigmas in self.setups
                for s in sigmas
            ]
        )
        self.get_descriptor_setup_hash()


class Gaussian(AMPTorchInterface, _gaussian.Gaussian):
    """AMPTorch's ``Gaussian(Gs, elements, cutoff_func="cosine", gamma=None)``; see
    :class:`fastfp.descriptors.gaussian.Gaussian`. Its derivatives are not thresholded
    (as in AMPTorch)."""

    def __init__(self, Gs, elements, cutoff_func="cosine", gamma=None):
        cutoff_params = {"cutoff_func": cutoff_func}
        if gamma is not None:
            cutoff_params["gamma"] = gamma
        super().__init__(Gs, elements, cutoff_params)
        self.cutoff_func = cutoff_func.lower()
        self.gamma = gamma
        self.get_descriptor_setup_hash()

    def _setup_text(self) -> str:
        head = "cosine" if self.cutoff_func == "cosine" else "polynomial%.15f" % self.gamma
        return head + "".join(
            el + "".join("%.15f" % v for row in rows for v in row) for el, rows in self.descriptor_setup.items()
        )


#: the classes of each ``fp_scheme``, as AMPTorch's ``construct_descriptor`` picks them
CLASSES = {"gaussian": Gaussian, "gmp": GMP, "gmpordernorm": GMPOrderNorm}


def construct_descriptor(descriptor_setup):
    """AMPTorch's ``construct_descriptor`` (``amptorch/dataset.py``) with these classes:
    ``descriptor_setup`` is ``(fp_scheme, fp_params, cutoff_params, elements)``; the
    ``fp_params`` dict is the descriptor's own (not copied), as in AMPTorch. Raises
    ``ValueError`` for an ``fp_scheme`` other than those of :data:`CLASSES`."""
    scheme, params, cutoff_params, elements = descriptor_setup
    if scheme not in CLASSES:
        raise ValueError(f"fp_scheme {scheme!r} is not one fastfp computes: {sorted(CLASSES)}")
    if scheme == "gaussian":
        return Gaussian(Gs=params, elements=elements, **cutoff_params)
    return CLASSES[scheme](MCSHs=params, elements=elements)
