"""``fastfp featurize`` end to end on real frames, and its error handling."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

from conftest import SHARED, assert_fingerprints_equal
from fastfp.cli import main
from fastfp.config import build_descriptor
from fastfp.store import open_store

OC20 = SHARED / "data" / "oc20_300_test.traj"
WATER = SHARED / "data" / "water_842.traj"
PSP = SHARED / "gmp" / "psp_v3"
N = 20

pytestmark = pytest.mark.skipif(
    not (OC20.is_file() and WATER.is_file() and PSP.is_dir()),
    reason=f"shared data (frames and pseudodensities) not found at {SHARED}",
)
has_gaussian = importlib.util.find_spec("fastfp.descriptors.gaussian") is not None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    oc20 = ase.io.read(OC20, f":{N}")
    water = ase.io.read(WATER, f":{N}")
    ase.io.write(d / "oc20.traj", oc20)
    ase.io.write(d / "water.traj", water)
    # GMPOrderNorm, psp_v3 template with a path relative to the config file, no elements
    gmp = {"fp_scheme": "gmpordernorm",
           "fp_params": {"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": [0.4, 0.8, 1.2, 1.6, 2.0]},
                         "cutoff": 8.0,
                         "atom_gaussians": {"<El>": os.path.relpath(PSP, d) + "/<El>_pseudodensity.g"}}}
    (d / "gmp.json").write_text(json.dumps(gmp))
    gauss = {"fp_scheme": "gaussian",
             "fp_params": {"default": {"G2": {"etas": [0.05, 0.23, 1.08, 5.0], "rs_s": [0]},
                                       "G4": {"etas": [0.005], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]},
                                       "cutoff": 6}},
             "elements": ["H", "O"], "cutoff_params": {"cutoff_func": "Cosine"}}
    (d / "gauss.json").write_text(json.dumps(gauss))
    return dict(dir=d, oc20=oc20, water=water)


def run(*args):
    return main(["featurize", *map(str, args), "--quiet"])


@pytest.fixture(scope="module")
def gmp_direct(data):
    d = data["dir"]
    elements = sorted({s for a in data["oc20"] for s in a.get_chemical_symbols()})
    return build_descriptor(d / "gmp.json", elements=elements).featurize(data["oc20"])


@pytest.fixture(scope="module")
def gmp_store(data):
    out = data["dir"] / "gmp.h5"
    assert run(data["dir"] / "oc20.traj", "--config", data["dir"] / "gmp.json", "--out", out,
               "--derivatives", "--chunk-size", 6) == 0
    return out


def test_gmpordernorm_end_to_end(data, gmp_store, gmp_direct):
    store = open_store(gmp_store)
    assert len(store) == N and store.has_derivatives and store.n_features == 20
    assert_fingerprints_equal(store.read_all(), gmp_direct)
    np.testing.assert_array_equal(store[13].fprimes, gmp_direct.frame(13).fprimes)
    assert store.config["elements"] == sorted({s for a in data["oc20"] for s in a.get_chemical_symbols()})
    store.require_config(data["dir"] / "gmp.json")
    assert store.metadata["source"] == str(data["dir"] / "oc20.traj")


def test_workers_identical(data, gmp_store):
    out = data["dir"] / "gmp_w2.h5"
    assert run(data["dir"] / "oc20.traj", "--config", data["dir"] / "gmp.json", "--out", out,
               "--derivatives", "--workers", 2, "--chunk-size", 3) == 0
    assert_fingerprints_equal(open_store(out).read_all(), open_store(gmp_store).read_all())


def test_frame_selection(data, gmp_direct):
    """ASE's FILE@SLICE picks frames, as ``ase.io.read`` would."""
    out = data["dir"] / "selected.h5"
    assert run(f"{data['dir'] / 'oc20.traj'}@3:9:2", "--config", data["dir"] / "gmp.json", "--out", out,
               "--derivatives") == 0
    store = open_store(out)
    assert len(store) == 3
    for k, frame in enumerate((3, 5, 7)):
        np.testing.assert_array_equal(store[k].fingerprints, gmp_direct.frame(frame).fingerprints)
        np.testing.assert_array_equal(store[k].fprimes, gmp_direct.frame(frame).fprimes)
    assert store.metadata["source"] == str(data["dir"] / "oc20.traj") + "@3:9:2"


def test_no_derivatives(data, gmp_direct):
    out = data["dir"] / "noderiv.h5"
    assert run(data["dir"] / "oc20.traj", "--config", data["dir"] / "gmp.json", "--out", out) == 0
    store = open_store(out)
    assert not store.has_derivatives and store[0].fprimes is None
    np.testing.assert_array_equal(store.read_all().fingerprints, gmp_direct.fingerprints)


@pytest.mark.skipif(not has_gaussian, reason="fastfp.descriptors.gaussian is not available yet")
def test_gaussian_end_to_end(data):
    d = data["dir"]
    out = d / "water.h5"
    assert run(d / "water.traj", "--config", d / "gauss.json", "--out", out, "--derivatives") == 0
    direct = build_descriptor(d / "gauss.json").featurize(data["water"])
    store = open_store(out)
    assert len(store) == N
    assert_fingerprints_equal(store.read_all(), direct)


def test_entry_point_subprocess(data, tmp_path):
    """The real process: exit code 2 and a one-line message on stderr."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-m", "fastfp", "featurize", str(tmp_path / "none.traj"),
                          "--config", str(data["dir"] / "gmp.json"), "--out", str(tmp_path / "o.h5")],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 2
    assert "none.traj" in res.stderr and "not found" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "fastfp", "--help"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "featurize" in res.stdout


# -- bad inputs: exit 2, message, nothing at --out, an old store untouched ---------------------

def check_fails(capsys, out, before, *args, match):
    rc = run(*args, "--out", out)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert match in err, err
    assert "Traceback" not in err
    assert (out.read_bytes() == before) if before is not None else not out.exists()
    if out.parent.is_dir():
        assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def write_config(tmp_path, data, **change):
    cfg = json.loads((data["dir"] / "gmp.json").read_text())
    cfg["fp_params"]["atom_gaussians"] = {"<El>": str(PSP / "<El>_pseudodensity.g")}
    cfg.update(change)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    return p


@pytest.mark.parametrize("keep_old", [False, True])
def test_missing_frames_file(data, tmp_path, capsys, keep_old):
    out = tmp_path / "out.h5"
    before = None
    if keep_old:
        out.write_bytes(b"old contents")
        before = out.read_bytes()
    check_fails(capsys, out, before, tmp_path / "missing.traj", "--config", data["dir"] / "gmp.json",
                match="missing.traj' not found")


def test_not_ase_file(data, tmp_path, capsys):
    junk = tmp_path / "junk.traj"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    check_fails(capsys, tmp_path / "out.h5", None, junk, "--config", data["dir"] / "gmp.json",
                match="cannot read frames from")
    txt = tmp_path / "notes.txt"
    txt.write_text("not frames\n")
    check_fails(capsys, tmp_path / "out.h5", None, txt, "--config", data["dir"] / "gmp.json",
                match="cannot read frames from")


def test_unknown_fp_scheme(data, tmp_path, capsys):
    cfg = write_config(tmp_path, data, fp_scheme="soap")
    out = tmp_path / "out.h5"
    out.write_bytes(b"old")
    check_fails(capsys, out, b"old", data["dir"] / "oc20.traj", "--config", cfg, match="unknown fp_scheme 'soap'")


def test_missing_config(data, tmp_path, capsys):
    check_fails(capsys, tmp_path / "out.h5", None, data["dir"] / "oc20.traj", "--config", tmp_path / "nope.json",
                match="nope.json' not found")


def test_element_without_pseudodensity(data, tmp_path, capsys):
    gdir = tmp_path / "psp"
    gdir.mkdir()
    for p in PSP.glob("*_pseudodensity.g"):
        if not p.name.startswith("Cu_"):
            (gdir / p.name).write_bytes(p.read_bytes())
    cfg = write_config(tmp_path, data)
    c = json.loads(cfg.read_text())
    c["fp_params"]["atom_gaussians"] = {"<El>": "psp/<El>_pseudodensity.g"}
    cfg.write_text(json.dumps(c))
    assert any("Cu" in a.get_chemical_symbols() for a in data["oc20"])
    check_fails(capsys, tmp_path / "out.h5", None, data["dir"] / "oc20.traj", "--config", cfg,
                match="element Cu: pseudodensity file")


@pytest.mark.parametrize("workers", [1, 2])
def test_nan_frame(data, tmp_path, capsys, workers):
    frames = [a.copy() for a in data["oc20"][:8]]
    frames[5].positions[3, 1] = np.nan
    bad = tmp_path / "nan.traj"
    ase.io.write(bad, frames)
    out = tmp_path / "out.h5"
    out.write_bytes(b"old")
    check_fails(capsys, out, b"old", bad, "--config", data["dir"] / "gmp.json", "--chunk-size", 2,
                "--workers", workers, "--derivatives", match="frame 5: non-finite")


def test_element_not_in_config(data, tmp_path, capsys):
    cfg = write_config(tmp_path, data, elements=["H", "O"])
    check_fails(capsys, tmp_path / "out.h5", None, data["dir"] / "oc20.traj", "--config", cfg,
                match="frame 0: element(s)")


def test_bad_arguments(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run(data["dir"] / "oc20.traj", "--config", data["dir"] / "gmp.json", "--out", tmp_path / "o.h5",
            "--workers", 0)
    assert exc.value.code == 2
    assert not (tmp_path / "o.h5").exists()
    check_fails(capsys, tmp_path / "no_dir" / "o.h5", None, data["dir"] / "oc20.traj",
                "--config", data["dir"] / "gmp.json", match="does not exist")


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples").glob("*.json")), ids=lambda p: p.name)
def test_example_configs_featurize(data, path):
    """The configs the README and reports use load as written and give fingerprints."""
    frames = data["water"][:2] if "water" in path.name else data["oc20"][:2]
    config = json.loads(path.read_text())
    elements = config.get("elements") or sorted({s for a in frames for s in a.get_chemical_symbols()})
    fps = build_descriptor(path, elements=elements).featurize(frames)
    assert fps.fingerprints.shape[0] == sum(len(a) for a in frames)
    assert np.isfinite(fps.fingerprints).all() and np.abs(fps.fingerprints).max() > 0
