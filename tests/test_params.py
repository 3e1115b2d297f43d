"""Every key of the three descriptors' parameters, and of a config, with a wrong type or a
value out of range: refused with :class:`fastfp.ConfigError` naming the key path, what
was given and what is expected, the same way through the descriptor classes, the
AMPTorch-interface classes and a config (:func:`fastfp.config.resolve_config`)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fastfp.amptorch
from conftest import write_pseudodensities
from fastfp import GMP, ConfigError, Gaussian, GMPOrderNorm
from fastfp.config import resolve_config

ELEMENTS = ["H", "O"]
GMPORDERNORM = {"MCSHs": {"orders": [0, 1], "sigmas": [0.5, 1.0]}, "cutoff": 5.0}
GMP_PARAMS = {"MCSHs": {"0": {"groups": [1], "sigmas": [0.5]}, "2": {"groups": [1, 2], "sigmas": [0.5, 1.0]}},
              "cutoff": 5.0}
GAUSSIAN = {"default": {"G2": {"etas": [0.05, 1.0], "rs_s": [0.0]},
                        "G4": {"etas": [0.005], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]},
                        "G5": {"etas": [0.005], "zetas": [1.0], "gammas": [1.0]},
                        "cutoff": 6.0}}

#: keys and values both GMP descriptors take
GMP_SHARED = [
    ("atom_gaussians", ["H.g"], "atom_gaussians: expected an object (a dict), got ['H.g'] (list)"),
    ("atom_gaussians", {"H": 1}, "atom_gaussians.H: expected a string, got 1 (int)"),
    ("atom_gaussians", {"H": ""}, "atom_gaussians.H: expected a non-empty string, got ''"),
    ("cutoff", True, "cutoff: expected a number, got True (bool)"),
    ("cutoff", "4.0", "cutoff: expected a number, got '4.0' (str)"),
    ("cutoff", [4.0], "cutoff: expected a number, got [4.0] (list)"),
    ("cutoff", None, "cutoff: expected a number, got None (NoneType)"),
    ("cutoff", 0, "cutoff: expected a value > 0, got 0"),
    ("cutoff", -3.0, "cutoff: expected a value > 0, got -3.0"),
    ("cutoff", float("inf"), "cutoff: expected a finite number, got inf"),
    ("square", 1, "square: expected true or false, got 1 (int)"),
    ("square", "true", "square: expected true or false, got 'true' (str)"),
    ("rs_setup", "constant", "rs_setup: expected an object (a dict), got 'constant' (str)"),
    ("rs_setup", {"rs": 1.0}, "rs_setup: expected an object with a 'setup' key"),
    ("rs_setup", {"setup": "other"}, "rs_setup: expected 'setup' one of 'constant', 'scale', got {'setup': 'other'}"),
    ("rs_setup", {"setup": "constant"}, "rs_setup.rs: required, missing"),
    ("rs_setup", {"setup": "constant", "rs": 0.0}, "rs_setup.rs: expected a value > 0, got 0.0"),
    ("rs_setup", {"setup": "constant", "rs": 1.0, "scale_factor": 2.0}, "rs_setup: unknown parameter key(s) ['scale_factor']"),
    ("rs_setup", {"setup": "scale", "scale_factor": "2"}, "rs_setup.scale_factor: expected a number, got '2' (str)"),
    ("rs_setup", {"setup": "scale", "scale_factor": -1}, "rs_setup.scale_factor: expected a value > 0, got -1"),
    ("prime_threshold", -1e-5, "prime_threshold: expected a value >= 0, got -1e-05"),
    ("prime_threshold", "1e-5", "prime_threshold: expected a number, got '1e-5' (str)"),
    ("log", "no", "log: expected true or false, got 'no' (str)"),
    ("log", 0, "log: expected true or false, got 0 (int)"),
    ("sigma", [1.0], ": unknown parameter key(s) ['sigma']"),
]
#: (key, value, expected message after "<where> ") of GMPOrderNorm
GMPORDERNORM_CASES = GMP_SHARED + [
    ("MCSHs", [0, 1], "MCSHs: expected an object (a dict), got [0, 1] (list)"),
    ("MCSHs", {"orders": [0]}, "MCSHs.sigmas: required, missing"),
    ("MCSHs", {"orders": [0], "sigmas": [1.0], "groups": [1]}, "MCSHs: unknown parameter key(s) ['groups']"),
    ("MCSHs", {"orders": 2, "sigmas": [1.0]}, "MCSHs.orders: expected a list, got 2 (int)"),
    ("MCSHs", {"orders": [], "sigmas": [1.0]}, "MCSHs.orders: expected a non-empty list, got []"),
    ("MCSHs", {"orders": [1.0], "sigmas": [1.0]}, "MCSHs.orders[0]: expected an integer, got 1.0 (float)"),
    ("MCSHs", {"orders": ["1"], "sigmas": [1.0]}, "MCSHs.orders[0]: expected an integer, got '1' (str)"),
    ("MCSHs", {"orders": [True], "sigmas": [1.0]}, "MCSHs.orders[0]: expected an integer, got True (bool)"),
    ("MCSHs", {"orders": [0, -1], "sigmas": [1.0]}, "MCSHs.orders[1]: expected a value >= 0, got -1"),
    ("MCSHs", {"orders": [10], "sigmas": [1.0]}, "MCSHs.orders[0]: expected a value <= 9, got 10"),
    ("MCSHs", {"orders": [0], "sigmas": 0.5}, "MCSHs.sigmas: expected a list, got 0.5 (float)"),
    ("MCSHs", {"orders": [0], "sigmas": []}, "MCSHs.sigmas: expected a non-empty list, got []"),
    ("MCSHs", {"orders": [0], "sigmas": [0.5, 0.0]}, "MCSHs.sigmas[1]: expected a value > 0, got 0.0"),
    ("MCSHs", {"orders": [0], "sigmas": [float("nan")]}, "MCSHs.sigmas[0]: expected a finite number, got nan"),
    ("MCSHs", {"orders": [0], "sigmas": ["0.5"]}, "MCSHs.sigmas[0]: expected a number, got '0.5' (str)"),
    ("MCSHs_detailed_list", {"order": 0, "sigmas": [1.0]},
     "MCSHs_detailed_list: expected a list, got {'order': 0, 'sigmas': [1.0]} (dict)"),
    ("MCSHs_detailed_list", [], "MCSHs_detailed_list: expected a non-empty list, got []"),
    ("MCSHs_detailed_list", [{"sigmas": [1.0]}], "MCSHs_detailed_list[0].order: required, missing"),
    ("MCSHs_detailed_list", [{"order": 0, "group": 1, "sigmas": [1.0]}],
     "MCSHs_detailed_list[0]: unknown parameter key(s) ['group']"),
    ("MCSHs_detailed_list", [{"order": "3", "sigmas": [1.0]}],
     "MCSHs_detailed_list[0].order: expected an integer, got '3' (str)"),
    ("MCSHs_detailed_list", [{"order": 3, "sigmas": [-1.0]}],
     "MCSHs_detailed_list[0].sigmas[0]: expected a value > 0, got -1.0"),
    ("solid_harmonics", "yes", "solid_harmonics: expected true or false, got 'yes' (str)"),
    ("solid_harmonics", 1, "solid_harmonics: expected true or false, got 1 (int)"),
]
GMP_CASES = GMP_SHARED + [
    ("MCSHs", [{"groups": [1], "sigmas": [1.0]}], "MCSHs: expected an object (a dict)"),
    ("MCSHs", {}, "MCSHs: expected a non-empty list"),  # pydantic's word for any sized value
    ("MCSHs", {"x": {"groups": [1], "sigmas": [1.0]}}, "MCSHs.x: expected an MCSH order \"0\"..\"9\" as key, got 'x'"),
    ("MCSHs", {"10": {"groups": [1], "sigmas": [1.0]}}, "MCSHs['10']: expected an MCSH order \"0\"..\"9\" as key"),
    ("MCSHs", {"1": {"groups": [1], "sigmas": [1.0]}, 1: {"groups": [1], "sigmas": [1.0]}},
     "MCSHs: order 1 given twice (keys '1' and 1)"),
    ("MCSHs", {"2": [1]}, "MCSHs['2']: expected an object (a dict), got [1] (list)"),
    ("MCSHs", {"2": {"sigmas": [1.0]}}, "MCSHs['2'].groups: required, missing"),
    ("MCSHs", {"2": {"groups": 1, "sigmas": [1.0]}}, "MCSHs['2'].groups: expected a list, got 1 (int)"),
    ("MCSHs", {"2": {"groups": [], "sigmas": [1.0]}}, "MCSHs['2'].groups: expected a non-empty list, got []"),
    ("MCSHs", {"2": {"groups": [0], "sigmas": [1.0]}}, "MCSHs['2'].groups[0]: expected a value >= 1, got 0"),
    ("MCSHs", {"2": {"groups": [3], "sigmas": [1.0]}}, "MCSHs: MCSH order 2 has groups 1..2, got 3"),
    ("MCSHs", {"2": {"groups": [1.5], "sigmas": [1.0]}}, "MCSHs['2'].groups[0]: expected an integer, got 1.5 (float)"),
    ("MCSHs", {"2": {"groups": [1], "sigmas": 1.0}}, "MCSHs['2'].sigmas: expected a list, got 1.0 (float)"),
    ("MCSHs", {"2": {"groups": [1], "sigmas": [True]}}, "MCSHs['2'].sigmas[0]: expected a number, got True (bool)"),
    ("MCSHs", {"2": {"groups": [1], "sigmas": [1.0], "orders": [2]}}, "MCSHs['2']: unknown parameter key(s) ['orders']"),
    ("MCSHs_detailed_list", [{"order": 1, "sigmas": [1.0]}], "MCSHs_detailed_list[0].group: required, missing"),
    ("MCSHs_detailed_list", [{"order": 4, "group": 5, "sigmas": [1.0]}],
     "MCSHs_detailed_list[0]: MCSH order 4 has groups 1..4, got 5"),
    ("MCSHs_detailed_list", [{"order": 4, "group": "1", "sigmas": [1.0]}],
     "MCSHs_detailed_list[0].group: expected an integer, got '1' (str)"),
    ("MCSHs_detailed_list", [{"order": 12, "group": 1, "sigmas": [1.0]}],
     "MCSHs_detailed_list[0].order: expected a value <= 9, got 12"),
    ("MCSHs_detailed_list", [{"order": 1, "group": 1, "sigmas": []}],
     "MCSHs_detailed_list[0].sigmas: expected a non-empty list, got []"),
]
#: (path in Gs as keys, value, expected message after "<where> ") of Gaussian
GAUSSIAN_CASES = [
    ((), [1.0], ": expected an object (a dict), got [1.0] (list)"),
    (("defualt",), {"G2": {"etas": [1.0], "rs_s": [0.0]}, "cutoff": 4.0},
     "defualt: expected 'default' or a chemical element symbol as key, got 'defualt'"),
    (("default", "cutoff"), True, "default.cutoff: expected a number, got True (bool)"),
    (("default", "cutoff"), "6", "default.cutoff: expected a number, got '6' (str)"),
    (("default", "cutoff"), 0.0, "default.cutoff: expected a value > 0, got 0.0"),
    (("default", "cutoff"), float("nan"), "default.cutoff: expected a finite number, got nan"),
    (("default", "G3"), {}, "default: unknown parameter key(s) ['G3']"),
    (("default", "G2"), [0.05], "default.G2: expected an object (a dict), got [0.05] (list)"),
    (("default", "G2", "etas"), 0.05, "default.G2.etas: expected a list, got 0.05 (float)"),
    (("default", "G2", "etas"), [], "default.G2.etas: expected a non-empty list, got []"),
    (("default", "G2", "etas"), [1.0, -0.5], "default.G2.etas[1]: expected a value >= 0, got -0.5"),
    (("default", "G2", "etas"), ["1"], "default.G2.etas[0]: expected a number, got '1' (str)"),
    (("default", "G2", "rs_s"), 0.0, "default.G2.rs_s: expected a list, got 0.0 (float)"),
    (("default", "G2", "rs_s"), [float("inf")], "default.G2.rs_s[0]: expected a finite number, got inf"),
    (("default", "G2", "rs"), [0.0], "default.G2: unknown parameter key(s) ['rs']"),
    (("default", "G4", "etas"), 0.005, "default.G4.etas: expected a list, got 0.005 (float)"),
    (("default", "G4", "zetas"), [0.5], "default.G4.zetas[0]: expected a value >= 1, got 0.5"),
    (("default", "G4", "zetas"), [True], "default.G4.zetas[0]: expected a number, got True (bool)"),
    (("default", "G4", "gammas"), 1.0, "default.G4.gammas: expected a list, got 1.0 (float)"),
    (("default", "G4", "gammas"), [], "default.G4.gammas: expected a non-empty list, got []"),
    (("default", "G5", "etas"), [-1.0], "default.G5.etas[0]: expected a value >= 0, got -1.0"),
    (("default", "G5", "zetas"), "4", "default.G5.zetas: expected a list, got '4' (str)"),
    (("default", "G5", "gammas"), [None], "default.G5.gammas[0]: expected a number, got None (NoneType)"),
    (("Pt", "cutoff"), -1.0, "Pt.cutoff: expected a value > 0, got -1.0"),
    (("Pt", "G2"), {"etas": [1.0], "rs_s": [0.0]}, "Pt.cutoff: required, missing"),
]
#: (cutoff_params, expected message after "<where> ")
CUTOFF_CASES = [
    ({"cutoff_func": 3}, "cutoff_func: expected 'cosine' or 'polynomial', got 3"),
    ({"cutoff_func": "Gaussian"}, "cutoff_func: expected 'cosine' or 'polynomial', got 'gaussian'"),
    ({"cutoff_func": "Polynomial"}, ": the polynomial cutoff needs 'gamma' > 0"),
    ({"cutoff_func": "Polynomial", "gamma": 0.0}, "gamma: expected a value > 0, got 0.0"),
    ({"cutoff_func": "Polynomial", "gamma": "2"}, "gamma: expected a number, got '2' (str)"),
    ({"cutoff_func": "Cosine", "width": 1.0}, ": unknown parameter key(s) ['width']"),
]
#: (change to a GMPOrderNorm config, expected message after "config ")
CONFIG_CASES = [
    ({"fp_scheme": 3}, "fp_scheme: expected 'gmpordernorm', 'gmp' or 'gaussian', got 3"),
    ({"fp_scheme": "soap"}, "fp_scheme: expected 'gmpordernorm', 'gmp' or 'gaussian', got 'soap'"),
    ({"fp_params": [1]}, "fp_params: expected an object (a dict), got [1] (list)"),
    ({"elements": "HO"}, "elements: expected a list, got 'HO' (str)"),
    ({"elements": []}, "elements: expected a non-empty list, got []"),
    ({"elements": ["H", "Xx"]}, "elements[1]: expected a chemical element symbol, got 'Xx'"),
    ({"elements": ["H", 8]}, "elements[1]: expected a string, got 8 (int)"),
    ({"elements": ["H", "O", "H"]}, "elements: duplicate element(s) ['H']"),
    ({"cutoff_params": "Cosine"}, "cutoff_params: expected an object (a dict), got 'Cosine' (str)"),
    ({"cutoff_params": {"cutoff_func": "Cosine"}}, ": 'cutoff_params' applies to fp_scheme 'gaussian' only"),
    ({"fingerprint": 1}, ": unknown parameter key(s) ['fingerprint']"),
]


@pytest.fixture(scope="module")
def gaussians(tmp_path_factory):
    """``atom_gaussians`` of H and O (one Gaussian each)."""
    return write_pseudodensities(tmp_path_factory.mktemp("g"), {"H": [(1.0, 1.5)], "O": [(2.0, 0.8)]})


def gmp_params(base, gaussians, key, value):
    params = copy.deepcopy(base) | {"atom_gaussians": gaussians}
    params[key] = value
    if key == "MCSHs_detailed_list":
        del params["MCSHs"]
    return params


def refused(build, where, message):
    """``build()`` raises ConfigError saying ``where`` and ``message`` (after a space, or
    right after ``where`` if it starts with ":")."""
    with pytest.raises(ConfigError) as err:
        build()
    expected = where + (message if message.startswith(":") else " " + message)
    assert expected in str(err.value), str(err.value)


def test_valid_parameters_build(gaussians):
    """The bases of the cases below are valid, as AMPTorch's examples pass them (NumPy
    arrays and scalars, tuples, integers for numbers, path objects), through all three
    entry points."""
    import pathlib

    sigmas = np.linspace(0, 2.0, 3, endpoint=True)[1:]
    params = {"MCSHs": {"orders": list(range(2)), "sigmas": sigmas}, "cutoff": np.float64(5),
              "atom_gaussians": {el: pathlib.Path(p) for el, p in gaussians.items()},
              "square": np.bool_(True), "rs_setup": {"setup": "scale", "scale_factor": 2}}
    for cls in (GMPOrderNorm, fastfp.amptorch.GMPOrderNorm):
        assert cls(params, np.array(ELEMENTS)).n_features == 4
    assert GMP(gmp_params(GMP_PARAMS, gaussians, "cutoff", 5), ELEMENTS).n_features == 5
    gs = copy.deepcopy(GAUSSIAN)
    gs["default"]["G2"]["etas"] = np.logspace(np.log10(0.05), np.log10(5.0), num=4)
    gs["default"]["G4"]["zetas"] = (1, 4)
    gs["default"]["cutoff"] = 6
    assert Gaussian(gs, ELEMENTS).n_features == fastfp.amptorch.Gaussian(gs, ELEMENTS).n_features
    config = {"fp_scheme": "GMPOrderNorm", "fp_params": params, "elements": ELEMENTS}
    assert resolve_config(config)["fp_params"]["MCSHs"]["sigmas"] == [1.0, 2.0]


@pytest.mark.parametrize("key, value, message", GMPORDERNORM_CASES)
@pytest.mark.parametrize("cls", [GMPOrderNorm, fastfp.amptorch.GMPOrderNorm], ids=["fastfp", "amptorch"])
def test_gmpordernorm(gaussians, cls, key, value, message):
    refused(lambda: cls(gmp_params(GMPORDERNORM, gaussians, key, value), ELEMENTS), "GMPOrderNorm", message)


@pytest.mark.parametrize("key, value, message", GMP_CASES)
@pytest.mark.parametrize("cls", [GMP, fastfp.amptorch.GMP], ids=["fastfp", "amptorch"])
def test_gmp(gaussians, cls, key, value, message):
    refused(lambda: cls(gmp_params(GMP_PARAMS, gaussians, key, value), ELEMENTS), "GMP", message)


def gaussian_params(path, value):
    if not path:
        return value
    gs = copy.deepcopy(GAUSSIAN)
    node = gs
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return gs


@pytest.mark.parametrize("path, value, message", GAUSSIAN_CASES)
@pytest.mark.parametrize("cls", [Gaussian, fastfp.amptorch.Gaussian], ids=["fastfp", "amptorch"])
def test_gaussian(cls, path, value, message):
    refused(lambda: cls(gaussian_params(path, value), ELEMENTS), "Gaussian Gs", message)


def test_gaussian_element_without_parameters():
    refused(lambda: Gaussian({"O": GAUSSIAN["default"]}, ELEMENTS),
            "Gaussian Gs", ": no parameters for element(s) ['H'] and no 'default'")


@pytest.mark.parametrize("cutoff_params, message", CUTOFF_CASES)
def test_gaussian_cutoff_params(cutoff_params, message):
    refused(lambda: Gaussian(GAUSSIAN, ELEMENTS, cutoff_params), "Gaussian cutoff_params", message)
    if "width" not in cutoff_params:  # AMPTorch's interface takes them as keywords
        refused(lambda: fastfp.amptorch.Gaussian(GAUSSIAN, ELEMENTS, **cutoff_params), "Gaussian cutoff_params", message)


@pytest.mark.parametrize("change, message", CONFIG_CASES)
def test_config(gaussians, change, message):
    config = {"fp_scheme": "gmpordernorm", "fp_params": GMPORDERNORM | {"atom_gaussians": gaussians},
              "elements": ELEMENTS} | change
    refused(lambda: resolve_config(config), "config", message)


@pytest.mark.parametrize("scheme, key, value, message", [
    ("gmpordernorm", "cutoff", "8", "fp_params.cutoff: expected a number, got '8' (str)"),
    ("gmp", "MCSHs", {"2": {"groups": [3], "sigmas": [1.0]}}, "fp_params.MCSHs: MCSH order 2 has groups 1..2"),
    ("gaussian", "default", {"G2": {"etas": 0.05, "rs_s": [0.0]}, "cutoff": 6.0},
     "fp_params.default.G2.etas: expected a list, got 0.05 (float)"),
])
def test_config_params_are_the_descriptors(gaussians, scheme, key, value, message):
    """A config's fp_params are checked as its descriptor checks them, with the path from the config."""
    base = {"gmpordernorm": GMPORDERNORM, "gmp": GMP_PARAMS, "gaussian": GAUSSIAN}[scheme]
    params = copy.deepcopy(base) | ({} if scheme == "gaussian" else {"atom_gaussians": gaussians}) | {key: value}
    refused(lambda: resolve_config({"fp_scheme": scheme, "fp_params": params, "elements": ELEMENTS}), "config", message)
