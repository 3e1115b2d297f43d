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
from fastfp.cli import build_parser, main
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
    out = data["dir"] / "gmp.store"
    assert run(data["dir"] / "oc20.traj", "--config", data["dir"] / "gmp.json", "--out", out,
               "--derivatives", "--chunk-frames", 6, "--shard-frames", 8) == 0
    return out


def test_gmpordernorm_end_to_end(data, gmp_store, gmp_direct):
    store = open_store(gmp_store)
    assert len(store) == N and store.has_derivatives and store.n_features == 20
    assert_fingerprints_equal(store.read_all(), gmp_direct)
    np.testing.assert_array_equal(store[13].fprimes, gmp_direct.frame(13).fprimes)
    assert store.config["elements"] == sorted({s for a in data["oc20"] for s in a.get_chemical_symbols()})
    store.require_config(data["dir"] / "gmp.json")
    assert store.source["frames"] == str(data["dir"] / "oc20.traj")
    assert store.shard_bounds == [(0, 8), (8, 16), (16, 20)]


def test_cluster_identical(data, gmp_store):
    pytest.importorskip("distributed", reason="needs dask.distributed (the 'cluster' extra)")
    out = data["dir"] / "gmp_local2.store"
    assert run(data["dir"] / "oc20.traj", "--config", data["dir"] / "gmp.json", "--out", out,
               "--derivatives", "--cluster", "local:2", "--chunk-frames", 3, "--shard-frames", 8) == 0
    for name in ("shard-00000.h5", "shard-00001.h5", "shard-00002.h5"):
        assert (out / name).read_bytes() == (gmp_store / name).read_bytes()


def test_frame_selection(data, gmp_direct):
    """ASE's FILE@SLICE picks frames, as ``ase.io.read`` would."""
    out = data["dir"] / "selected.store"
    assert run(f"{data['dir'] / 'oc20.traj'}@3:9:2", "--config", data["dir"] / "gmp.json", "--out", out,
               "--derivatives") == 0
    store = open_store(out)
    assert len(store) == 3
    for k, frame in enumerate((3, 5, 7)):
        np.testing.assert_array_equal(store[k].fingerprints, gmp_direct.frame(frame).fingerprints)
        np.testing.assert_array_equal(store[k].fprimes, gmp_direct.frame(frame).fprimes)
    assert store.source["frames"] == str(data["dir"] / "oc20.traj") + "@3:9:2"


def test_no_derivatives(data, gmp_direct):
    out = data["dir"] / "noderiv.store"
    assert run(data["dir"] / "oc20.traj", "--config", data["dir"] / "gmp.json", "--out", out) == 0
    store = open_store(out)
    assert not store.has_derivatives and store[0].fprimes is None
    np.testing.assert_array_equal(store.read_all().fingerprints, gmp_direct.fingerprints)


@pytest.mark.skipif(not has_gaussian, reason="fastfp.descriptors.gaussian is not available yet")
def test_gaussian_end_to_end(data):
    d = data["dir"]
    out = d / "water.store"
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
    check_fails(capsys, tmp_path / "out.store", None, data["dir"] / "oc20.traj", "--config", cfg,
                match="fp_scheme: expected 'gmpordernorm', 'gmp' or 'gaussian', got 'soap'")


@pytest.mark.parametrize("scheme, key, value, match", [
    ("gmp.json", "cutoff", True, "fp_params.cutoff: expected a number, got True (bool)"),
    ("gmp.json", "cutoff", "4.0", "fp_params.cutoff: expected a number, got '4.0' (str)"),
    ("gauss.json", "etas", 0.05, "fp_params.default.G2.etas: expected a list, got 0.05 (float)"),
])
def test_wrong_type_in_config(data, tmp_path, capsys, scheme, key, value, match):
    """A value of the wrong type is refused naming its key, before anything is written
    (it used to pass: ``"cutoff": true`` featurized with a 1 Å cutoff)."""
    cfg = json.loads((data["dir"] / scheme).read_text())
    if scheme == "gmp.json":
        cfg["fp_params"]["atom_gaussians"] = {"<El>": str(PSP / "<El>_pseudodensity.g")}
        cfg["fp_params"][key] = value
    else:
        cfg["fp_params"]["default"]["G2"][key] = value
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    frames = data["dir"] / ("oc20.traj" if scheme == "gmp.json" else "water.traj")
    check_fails(capsys, tmp_path / "out.store", None, frames, "--config", tmp_path / "c.json", match=match)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


@pytest.mark.parametrize("selection", ["abc", "1:b", "::0", "1:2:3:4"])
def test_bad_frame_selection(data, tmp_path, capsys, selection):
    """A selection that is not ASE's is named (it used to fail with "AttributeError: 'str'
    object has no attribute 'indices'")."""
    check_fails(capsys, tmp_path / "out.store", None, f"{data['dir'] / 'oc20.traj'}@{selection}",
                "--config", data["dir"] / "gmp.json",
                match=f"bad frame selection {selection!r}; expected an index or a slice such as @7")


def test_interrupt_in_a_finalizer_prints_nothing(monkeypatch):
    """Ctrl-C arriving while Python runs a finalizer (``__del__``, garbage collection) is
    lost there; the run still stops at its next check, and Python's "Exception ignored in"
    report of it (``sys.unraisablehook``) is not made (it used to be)."""
    import signal

    from fastfp.cli import _interruptible
    from fastfp.cluster import run_tasks

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the finalizer

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            with _interruptible():
                for _ in run_tasks(Finalized, [(), (), ()]):
                    pass
    finally:
        signal.signal(signal.SIGINT, previous)
    assert reported == []
    assert sys.unraisablehook == reported.append  # restored


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


@pytest.mark.parametrize("cluster", [None, "local:2"])
def test_nan_frame(data, tmp_path, capsys, cluster):
    """A bad frame in the third shard: the store the run started is removed."""
    if cluster:
        pytest.importorskip("distributed", reason="needs dask.distributed (the 'cluster' extra)")
    frames = [a.copy() for a in data["oc20"][:8]]
    frames[5].positions[3, 1] = np.nan
    bad = tmp_path / "nan.traj"
    ase.io.write(bad, frames)
    check_fails(capsys, tmp_path / "out.store", None, bad, "--config", data["dir"] / "gmp.json", "--chunk-frames", 1,
                "--shard-frames", 2, *(["--cluster", cluster] if cluster else []), "--derivatives",
                match="frame 5: non-finite")


def test_element_not_in_config(data, tmp_path, capsys):
    cfg = write_config(tmp_path, data, elements=["H", "O"])
    check_fails(capsys, tmp_path / "out.h5", None, data["dir"] / "oc20.traj", "--config", cfg,
                match="frame 0: element(s)")


def test_bad_arguments(data, tmp_path, capsys):
    for bad in (["--shard-frames", 0], ["--cluster", "local:0"], ["--cluster", "yarn"], ["--fprimes-dtype", "float16"]):
        with pytest.raises(SystemExit) as exc:
            run(data["dir"] / "oc20.traj", "--config", data["dir"] / "gmp.json", "--out", tmp_path / "o.store", *bad)
        assert exc.value.code == 2
    assert "expected local:N" in capsys.readouterr().err
    assert not (tmp_path / "o.store").exists()
    check_fails(capsys, tmp_path / "no_dir" / "o.h5", None, data["dir"] / "oc20.traj",
                "--config", data["dir"] / "gmp.json", match="does not exist")


def test_flags_by_their_earlier_names():
    """--fprimes-dtype and --chunk-frames were --dtype and --chunk-size; both spellings work."""
    parser = build_parser()
    for flags in (["--fprimes-dtype", "float32", "--chunk-frames", "3"], ["--dtype", "float32", "--chunk-size", "3"]):
        args = parser.parse_args(["featurize", "f.traj", "--config", "c.json", "--out", "o.store", *flags])
        assert (args.fprimes_dtype, args.chunk_frames) == ("float32", 3)
    for flag in ("--chunk-frames", "--chunk-size"):
        args = parser.parse_args(["lmdb", "f.traj", "--config", "c.json", "--out", "o", flag, "5"])
        assert args.chunk_frames == 5


# -- an --out that is not free: refused before any work, nothing touched -----------------------


@pytest.fixture
def copy_traj(data, tmp_path):
    ase.io.write(tmp_path / "copy.traj", data["oc20"][:6])
    (tmp_path / "gmp.json").write_text(write_config(tmp_path, data).read_text())
    return tmp_path


@pytest.mark.parametrize("command", ["featurize", "lmdb"])
@pytest.mark.parametrize("target", ["frames", "frames@slice", "config", "unrelated file", "unrelated directory"])
def test_out_names_an_input_or_unrelated_path(copy_traj, capsys, command, target):
    """``--out copy.traj`` (once replaced the 6-frame input by a 3-frame store) and any
    path that is not a store of the command's kind are refused, with or without
    --overwrite, and left as they were."""
    d = copy_traj
    frames = d / "copy.traj"
    out = {"frames": frames, "frames@slice": frames, "config": d / "gmp.json", "unrelated file": d / "notes.txt",
           "unrelated directory": d / "results"}[target]
    if target == "unrelated file":
        out.write_text("my notes\n")
    if target == "unrelated directory":
        out.mkdir()
        (out / "keep.txt").write_text("keep\n")
    snapshot = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    source = f"{frames}@:3" if target == "frames@slice" else frames
    for extra in ([], ["--overwrite"]):
        rc = main([command, str(source), "--config", str(d / "gmp.json"), "--out", str(out), "--quiet", *extra])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert ("left untouched" in err) and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == snapshot


def test_lmdb_directory_is_not_a_store(copy_traj, capsys):
    """An output of the other command is refused too (an LMDB directory is not a store)."""
    d = copy_traj
    (d / "data.lmdb").mkdir()
    (d / "data.lmdb" / "manifest.json").write_text(json.dumps({"format": "fastfp-lmdb"}))
    assert run(d / "copy.traj", "--config", d / "gmp.json", "--out", d / "data.lmdb", "--overwrite") == 2
    assert "is a 'fastfp-lmdb' directory, not a fastfp-store" in capsys.readouterr().err
    assert [p.name for p in (d / "data.lmdb").iterdir()] == ["manifest.json"]


def test_replacing_a_store_needs_overwrite(copy_traj, capsys):
    d = copy_traj
    out = d / "fp.store"
    assert run(d / "copy.traj", "--config", d / "gmp.json", "--out", out, "--shard-frames", 4) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run(d / "copy.traj", "--config", d / "gmp.json", "--out", out, "--shard-frames", 3) == 2
    err = capsys.readouterr().err
    assert "differing: shard_frames" in err and "--overwrite" in err, err
    assert run(d / "copy.traj@:3", "--config", d / "gmp.json", "--out", out, "--shard-frames", 4) == 2
    # fewer frames, hence fewer elements: named as other frames, their real cause
    assert "written from other frames (differing: source.frames, n_frames;" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert run(d / "copy.traj@:3", "--config", d / "gmp.json", "--out", out, "--shard-frames", 4, "--overwrite") == 0
    assert len(open_store(out)) == 3 and sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.h5"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (a directory no one can write in)")
@pytest.mark.parametrize("command", ["featurize", "lmdb"])
def test_unwritable_output_fails_before_any_work(copy_traj, capsys, command):
    """The frames have a NaN position (featurize) and no energies (lmdb): were any frame
    read, the error would name it; the output location is refused first."""
    d = copy_traj
    frames = ase.io.read(d / "copy.traj", ":")
    frames[0].positions[0, 0] = np.nan
    for atoms in frames:
        atoms.calc = None
    ase.io.write(d / "bad.traj", frames)
    rc = main([command, str(d / "bad.traj"), "--config", str(d / "gmp.json"), "--out", "/proc/fastfp-test.out", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot write in '/proc'" in err and "frame" not in err, err


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples").glob("*.json")), ids=lambda p: p.name)
def test_example_configs_featurize(data, path):
    """The configs the README and reports use load as written and give fingerprints."""
    frames = data["water"][:2] if "water" in path.name else data["oc20"][:2]
    config = json.loads(path.read_text())
    elements = config.get("elements") or sorted({s for a in frames for s in a.get_chemical_symbols()})
    fps = build_descriptor(path, elements=elements).featurize(frames)
    assert fps.fingerprints.shape[0] == sum(len(a) for a in frames)
    assert np.isfinite(fps.fingerprints).all() and np.abs(fps.fingerprints).max() > 0
