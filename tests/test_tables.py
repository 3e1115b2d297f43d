"""The kernel tables: one frozen, documented object per descriptor, what the CPU kernels read."""

import numpy as np
import pytest
from ase.build import molecule

from conftest import write_pseudodensities
from fastfp.descriptors import gaussian as gaussian_descriptor
from fastfp.descriptors import gmp as gmp_descriptor
from fastfp.descriptors.gaussian import Gaussian
from fastfp.descriptors.gmp import GMP, GMPOrderNorm
from fastfp.kernels.blocks import BLOCKS, FINGERPRINTS
from fastfp.kernels.tables import GaussianTables, GMPTables

ELEMENTS = ["H", "O"]


@pytest.fixture
def gaussians(tmp_path):
    return write_pseudodensities(tmp_path, {"H": [(1.0, 1.0)], "O": [(2.0, 0.5), (-0.3, 4.0)]})


def _descriptors(gaussians):
    return [
        GMPOrderNorm({"MCSHs": {"orders": [0, 1, 2], "sigmas": [0.5, 1.0]}, "cutoff": 4.0, "atom_gaussians": gaussians},
                     ELEMENTS),
        GMP({"MCSHs": {"0": {"groups": [1], "sigmas": [0.5]}, "3": {"groups": [1, 3], "sigmas": [0.7, 0.9]}},
             "cutoff": 4.0, "atom_gaussians": gaussians}, ELEMENTS),
        Gaussian({"default": {"G2": {"etas": [0.5, 2.0], "rs_s": [0.0]}, "cutoff": 4.0,
                              "G4": {"etas": [0.3], "zetas": [1.0, 2.5], "gammas": [1.0, -1.0]}},
                  "H": {"G2": {"etas": [1.0], "rs_s": [0.0, 0.5]}, "cutoff": 3.0,
                        "G5": {"etas": [0.1], "zetas": [2.0], "gammas": [1.0]}}}, ELEMENTS),
    ]


@pytest.mark.parametrize("cls", [GMPTables, GaussianTables])
def test_every_field_is_documented(cls):
    """Each field has its entry (shape, type, meaning) under Attributes, in field order."""
    entries = [line.strip().partition(" : ")[0] for line in cls.__doc__.splitlines()
               if line.startswith("    ") and not line.startswith("     ") and " : " in line]
    assert [name for entry in entries for name in entry.split(", ")] == list(cls._fields)


def test_tables_are_frozen(gaussians):
    for desc in _descriptors(gaussians):
        with pytest.raises(AttributeError):
            desc.tables.cutoffs = None if isinstance(desc.tables, GaussianTables) else desc.tables.feat_ptr


def test_gmp_tables_hold_the_features(gaussians):
    for desc in _descriptors(gaussians)[:2]:
        t = desc.tables
        assert isinstance(t, GMPTables) and t.n_features == desc.n_features
        sigma = np.array([f.sigma for f in desc.feature_specs])
        np.testing.assert_allclose(t.probe_alpha[t.feat_probe], 1 / (2 * sigma**2))
        # every member channel of a feature is of the feature's probe
        chan_probe = np.repeat(np.arange(t.n_probes), np.diff(t.chan_ptr))
        np.testing.assert_array_equal(chan_probe[t.feat_chan], np.repeat(t.feat_probe, np.diff(t.feat_ptr)))
        # the features by probe list each feature once, under its probe
        for s in range(t.n_probes):
            assert (t.feat_probe[t.probe_feat[t.probe_feat_ptr[s]:t.probe_feat_ptr[s + 1]]] == s).all()
        assert sorted(t.probe_feat) == list(range(t.n_features))
        n_gaussians = t.gauss_ptr[-1]
        assert t.gauss_ptr.tolist() == [0, 1, 3] and len(t.gauss_b) == n_gaussians
        assert t.overlap_c2.shape == (t.n_probes, n_gaussians)
        assert t.overlap_pref.shape == (t.n_probes, n_gaussians, t.n_slots)
        # C2 = -alpha beta / (alpha + beta)
        alpha, beta = t.probe_alpha[:, None], t.gauss_beta[None, :]
        np.testing.assert_allclose(t.overlap_c2, -alpha * beta / (alpha + beta))
        # each feature's derivative: one polynomial per slot, of every piece of every member in that slot
        for f in range(t.n_features):
            polys = range(t.poly_ptr[f], t.poly_ptr[f + 1])
            assert len(set(t.poly_slot[polys])) == len(polys)
            found = []
            for k in polys:
                terms = slice(t.poly_term_ptr[k], t.poly_term_ptr[k + 1])
                assert (t.piece_slot[t.poly_term_piece[terms]] == t.poly_slot[k]).all()
                found += zip(t.poly_term_member[terms], t.poly_term_piece[terms])
            members = range(t.feat_ptr[f], t.feat_ptr[f + 1])
            expected = sorted((m, p) for m in members for p in range(t.comp_piece_ptr[t.chan_comp[t.feat_chan[m]]],
                                                                      t.comp_piece_ptr[t.chan_comp[t.feat_chan[m]] + 1]))
            assert sorted(found) == expected
        # the monomials: every one up to the highest degree, by degree; the terms' and the gradients'
        degree = t.mono_exp.sum(axis=1)
        assert t.mono_ptr[-1] == len(t.mono_exp) == len({tuple(e) for e in t.mono_exp})
        for d in range(len(t.mono_ptr) - 1):
            assert (degree[t.mono_ptr[d] : t.mono_ptr[d + 1]] == d).all()
        np.testing.assert_array_equal(t.mono_exp[t.term_mono], t.term_exp)
        for axis in range(3):
            lower = t.mono_grad[:, axis]
            assert ((lower < 0) == (t.mono_exp[:, axis] == 0)).all()
            step = np.eye(3, dtype=np.int64)[axis]
            np.testing.assert_array_equal(t.mono_exp[lower[lower >= 0]], t.mono_exp[lower >= 0] - step)


def test_gaussian_tables_fill_every_column_once(gaussians):
    desc = _descriptors(gaussians)[2]
    t = desc.tables
    n_sp = len(desc.elements)
    np.testing.assert_array_equal(t.cutoffs, [desc.descriptor_setup[el][0, 3] for el in desc.elements])
    for e, el in enumerate(desc.elements):
        g2 = [t.g2_col[m] for n in range(n_sp) for m in range(t.g2_ptr[e * n_sp + n], t.g2_ptr[e * n_sp + n + 1])]
        first, last = t.tri_ptr[e * n_sp * n_sp], t.tri_ptr[(e + 1) * n_sp * n_sp]
        angular = t.tri_col[first:last]
        assert sorted(g2 + list(angular)) == list(range(len(desc.descriptor_setup[el])))
        # an angular feature's groups are its centre element's
        assert (t.rad_ptr[e] <= t.tri_rad[first:last]).all() and (t.tri_rad[first:last] < t.rad_ptr[e + 1]).all()
        assert (t.ang_ptr[e] <= t.tri_ang[first:last]).all() and (t.tri_ang[first:last] < t.ang_ptr[e + 1]).all()
    np.testing.assert_array_equal(t.ang_norm, 2.0 ** (1 - t.ang_zeta))


@pytest.mark.parametrize("derivatives", [True, False])
def test_cpu_kernels_take_the_descriptor_tables(gaussians, monkeypatch, derivatives):
    seen = []
    for module, name in ((gmp_descriptor, "gmp_kernel"), (gaussian_descriptor, "gaussian_kernel")):
        kernel = getattr(module, name)

        def recording(*args, kernel=kernel):
            # (tables, mode) before fp, pair_block, block_ptr, fprimes, x, out, atom_start, atom_stop
            seen.append(args[-10:-8])
            return kernel(*args)

        monkeypatch.setattr(module, name, recording)
    mode = BLOCKS if derivatives else FINGERPRINTS
    for desc in _descriptors(gaussians):
        seen.clear()
        desc.featurize([molecule("H2O")], derivatives=derivatives)
        assert seen and all(tables is desc.tables and flag == mode for tables, flag in seen)
