"""The AMPTorch patch series in ``patches/`` (see ``patches/README.md``).

* Without AMPTorch: every patch is a well-formed ``git format-patch`` file, numbered
  in order, that git can parse.
* With an AMPTorch git repository (``FASTFP_AMPTORCH_SRC``, else the local mirror when
  there is one): the series applies in order on a clean checkout of the base commit.
* With ``FASTFP_AMPTORCH_SRC`` set: the series is applied with ``git am`` to a clone in
  ``tmp_path`` (the given checkout is never touched), AMPTorch's C++ extensions are
  built in place there, and, with this Python environment and the patched source on
  ``PYTHONPATH``, AMPTorch's own tests run (:data:`AMPTORCH_TESTS`) and a short
  training run uses ``config["dataset"]["fp_backend"] = "fastfp"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PATCH_DIR = ROOT / "patches"
PATCHES = sorted(PATCH_DIR.glob("*.patch"))

#: AMPTorch master the series is made against
BASE = "02e5af3639484feda2a01a4e721f434ad54a70a1"
#: an AMPTorch git checkout at BASE, for the tests that run AMPTorch
SRC_ENV = "FASTFP_AMPTORCH_SRC"
#: used for the apply check when SRC_ENV is not set and it exists
MIRROR = Path("/work/.mirror/ulissigroup+amptorch/repo")

#: AMPTorch's own tests run on the patched source by default, with their number of
#: test functions: 5-8 min on 2 cores. Left out unless FASTFP_AMPTORCH_TESTS=all:
#: cp_uncertainty_calibration_test.py (100 epochs on 1000 GMP images, ~5 min) and
#: cutoff_funcs_test.py (2 x 300 epochs, ~4.5 min); test_script.py only re-runs the
#: same functions through unittest. The patches touch nothing that only those two
#: would exercise (both pass on the patched source: patches/README.md).
AMPTORCH_TESTS = {
    "amptorch/tests/consistency_test.py": 1,
    "amptorch/tests/gaussian_descriptor_set_test.py": 1,
    "amptorch/tests/pretrained_test.py": 2,
    "amptorch/tests/pretrained_test_lmdb.py": 2,
    "amptorch/tests/training_test.py": 1,
    "amptorch/tests/training_test_gmp.py": 1,
    # added by the series (fastfp's backend; need fastfp importable)
    "amptorch/tests/fp_backend_test.py": 10,
    "amptorch/tests/on_the_fly_test.py": 5,
}
#: run apart, in numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1)
AMPTORCH_GPU_TEST = "amptorch/tests/on_the_fly_gpu_test.py"
AMPTORCH_SLOW_TESTS = {
    "amptorch/tests/cutoff_funcs_test.py": 1,
    "amptorch/tests/cp_uncertainty_calibration_test.py": 1,
}
if os.environ.get("FASTFP_AMPTORCH_TESTS") == "all":
    AMPTORCH_TESTS = {**AMPTORCH_TESTS, **AMPTORCH_SLOW_TESTS}

requires_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(*args, cwd=None, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-c", "user.name=fastfp tests", "-c", "user.email=fastfp@localhost", *args],
        cwd=cwd,
        check=check,
        capture_output=True,
        text=True,
    )


def clone_at_base(src: Path, dst: Path) -> Path:
    """A clone of ``src`` in ``dst`` with BASE checked out (``src`` is only read)."""
    git("clone", "-q", "--no-checkout", str(src), str(dst))
    if git("cat-file", "-e", f"{BASE}^{{commit}}", cwd=dst, check=False).returncode:
        pytest.fail(f"{src} does not contain AMPTorch commit {BASE[:7]}, the base of the series")
    git("checkout", "-q", "--detach", BASE, cwd=dst)
    return dst


def amptorch_source() -> Path | None:
    if os.environ.get(SRC_ENV):
        return Path(os.environ[SRC_ENV])
    return MIRROR if MIRROR.exists() else None


# --- without AMPTorch ---------------------------------------------------------------


def test_series_present_and_numbered():
    assert PATCHES, f"no patches in {PATCH_DIR}"
    for i, patch in enumerate(PATCHES, start=1):
        assert re.fullmatch(rf"{i:04d}-[A-Za-z0-9._-]+\.patch", patch.name), patch.name


@pytest.mark.parametrize("patch", PATCHES, ids=[p.name[:4] for p in PATCHES])
def test_patch_well_formed(patch):
    text = patch.read_text()
    lines = text.splitlines()
    assert re.fullmatch(r"From [0-9a-f]{40} Mon Sep 17 00:00:00 2001", lines[0]), lines[0]
    header = text.split("\n\n", 1)[0]
    assert re.search(r"^From: .+ <.+@.+>$", header, re.M), "no From: author line"
    assert re.search(r"^Date: ", header, re.M), "no Date: line"
    i = PATCHES.index(patch) + 1
    subject = re.search(r"^Subject: \[PATCH (\d+)/(\d+)\] (.+)$", header, re.M)
    assert subject, "no 'Subject: [PATCH i/N] ...' line"
    assert (int(subject[1]), int(subject[2])) == (i, len(PATCHES)), subject[0]
    # a commit message body, the diffstat separator, diffs with hunks
    body, sep, diff = text.partition("\n---\n")
    assert sep and len(body.split("\n\n", 1)[-1].strip()) > 40, "no commit message body"
    assert re.search(r"^diff --git a/\S+ b/\S+$", diff, re.M)
    assert re.search(r"^@@ -\d+(,\d+)? \+\d+(,\d+)? @@", diff, re.M)
    assert "GIT binary patch" not in diff
    for path in re.findall(r"^diff --git a/(\S+) ", diff, re.M):
        assert not path.endswith((".so", ".pyc", ".o")), path


@requires_git
@pytest.mark.parametrize("patch", PATCHES, ids=[p.name[:4] for p in PATCHES])
def test_patch_parses(patch, tmp_path):
    """git's own parser reads every hunk (no repository needed; run outside this
    one, where git apply would ignore paths outside the current directory)."""
    out = git("apply", "--numstat", str(patch), cwd=tmp_path)
    assert len(out.stdout.splitlines()) == len(re.findall(r"^diff --git ", patch.read_text(), re.M))


def test_readme_lists_every_patch():
    readme = (PATCH_DIR / "README.md").read_text()
    for patch in PATCHES:
        assert patch.name in readme, f"{patch.name} is not described in patches/README.md"


@requires_git
def test_series_applies_in_order(tmp_path):
    src = amptorch_source()
    if src is None:
        pytest.skip(f"no AMPTorch git repository: set {SRC_ENV} to a checkout at {BASE[:7]}")
    work = clone_at_base(src, tmp_path / "amptorch")
    for patch in PATCHES:
        check = git("apply", "--check", str(patch), cwd=work, check=False)
        assert check.returncode == 0, f"{patch.name} does not apply:\n{check.stderr}"
        git("apply", "--index", str(patch), cwd=work)


# --- with AMPTorch: its tests on the patched source -------------------------------


#: the patches that make AMPTorch run on a current stack, before the fingerprint backends
COMPAT_PATCHES = [p for p in PATCHES if int(p.name[:4]) <= 8]


def built_clone(directory: Path, patches) -> Path:
    """FASTFP_AMPTORCH_SRC cloned into ``directory``, ``patches`` applied with ``git am``,
    the cffi extensions built next to their sources (nothing installed)."""
    work = clone_at_base(Path(os.environ[SRC_ENV]), directory / "amptorch")
    am = git("am", *map(str, patches), cwd=work, check=False)
    assert am.returncode == 0, f"git am failed:\n{am.stdout}\n{am.stderr}"
    count = git("rev-list", "--count", f"{BASE}..HEAD", cwd=work).stdout.strip()
    assert int(count) == len(patches)
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j", "2"], cwd=work,
                           capture_output=True, text=True)
    assert build.returncode == 0, f"building AMPTorch's extensions failed:\n{build.stderr[-4000:]}"
    return work


@pytest.fixture(scope="module")
def amptorch_env():
    """Skip unless FASTFP_AMPTORCH_SRC, git and AMPTorch's dependencies are here."""
    if not os.environ.get(SRC_ENV):
        pytest.skip(
            f"{SRC_ENV} is not set: point it at an AMPTorch git checkout at {BASE[:7]} "
            "to run AMPTorch's tests on the patched source"
        )
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    for module in ("torch", "skorch", "torch_geometric", "torch_scatter", "lmdb", "cffi", "scipy"):
        pytest.importorskip(module, reason=f"AMPTorch needs {module} in this environment")


@pytest.fixture(scope="module")
def patched_amptorch(amptorch_env, tmp_path_factory):
    """FASTFP_AMPTORCH_SRC cloned, the whole series applied, extensions built."""
    return built_clone(tmp_path_factory.mktemp("patched"), PATCHES)


@pytest.fixture(scope="module")
def entry_points(tmp_path_factory) -> Path:
    """fastfp's entry point for PYTHONPATH: the fastfp under test is this checkout's
    ``src``, while the installed fastfp's metadata may be an editable install of another
    checkout (tests/test_amptorch_backend.py checks pyproject.toml declares the same)."""
    from fastfp.harness.patched import entry_points_dir

    return entry_points_dir(tmp_path_factory.mktemp("entry-points"))


def run_python(work: Path, *args, entry_points: Path | None = None, env_extra=None, **kwargs):
    """``python ARGS`` in ``work`` with ``work``, this checkout's ``src`` (and
    ``entry_points``) first on ``PYTHONPATH``."""
    env = dict(os.environ, **(env_extra or {}))
    paths = [str(work), str(ROOT / "src"), str(entry_points) if entry_points else None, env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env.setdefault("OMP_NUM_THREADS", "2")
    return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, **kwargs)


def test_patched_source_is_imported(patched_amptorch, entry_points):
    code = ("import amptorch, fastfp; from amptorch.fp_backends import get_fp_backend; "
            "print(amptorch.__file__); print(fastfp.__file__); print(get_fp_backend('fastfp').__file__)")
    out = run_python(patched_amptorch, "-c", code, entry_points=entry_points)
    assert out.returncode == 0, out.stderr
    amptorch_file, fastfp_file, backend_file = out.stdout.split()
    assert Path(amptorch_file).resolve().is_relative_to(patched_amptorch.resolve())
    assert Path(fastfp_file).resolve().is_relative_to(ROOT / "src")
    assert Path(backend_file).resolve() == ROOT / "src" / "fastfp" / "amptorch" / "backend.py"


def run_amptorch_tests(work: Path, tests: dict, report: Path, entry_points: Path, env_extra=None):
    """AMPTorch's ``tests`` ({file: number of test functions}) in ``work``: all pass, none skipped."""
    out = run_python(work, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests,
                     entry_points=entry_points, env_extra=env_extra)
    assert out.returncode == 0, f"AMPTorch's tests failed on the patched source:\n{out.stdout[-6000:]}"
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert int(suite.get("tests")) == sum(tests.values())
    assert int(suite.get("skipped")) == 0


def test_amptorch_own_tests_pass(patched_amptorch, entry_points, tmp_path):
    run_amptorch_tests(patched_amptorch, AMPTORCH_TESTS, tmp_path / "amptorch-tests.xml", entry_points)


def test_on_the_fly_gpu_test_passes_in_the_cuda_simulator(patched_amptorch, entry_points, tmp_path):
    pytest.importorskip("numba.cuda", reason="numba's CUDA simulator needs numba")
    run_amptorch_tests(patched_amptorch, {AMPTORCH_GPU_TEST: 1}, tmp_path / "gpu-test.xml", entry_points,
                       env_extra={"NUMBA_ENABLE_CUDASIM": "1"})


#: "a config a user actually wrote": GMP (not GMPOrderNorm), MCSH orders 0-2 with groups,
#: valence-Gaussian pseudodensities, cutoff 8, SingleNN 3x10 with batchnorm, normalize to
#: (0, 1), val_split 0.1, save_fps, forces, on OC20 S2EF-like frames. argv: frames file,
#: pseudodensity folder, run directory, "patched" (fp_backend "fastfp") or "install"
#: (fastfp.amptorch.install() on AMPTorch without the backend patches). Prints the losses.
USER_CONFIG = textwrap.dedent(
    """
    import glob, json, os, sys
    import ase.io
    import torch
    from amptorch.trainer import AtomsTrainer

    frames_file, gaussians_dir, run_dir, how = sys.argv[1:]
    images = ase.io.read(frames_file, ":20")
    elements = sorted({s for atoms in images for s in atoms.get_chemical_symbols()})
    sigmas = [0.2, 0.69, 1.1, 1.66, 2.66]
    fp_params = {
        "MCSHs": {"0": {"groups": [1], "sigmas": sigmas}, "1": {"groups": [1], "sigmas": sigmas},
                  "2": {"groups": [1, 2], "sigmas": sigmas}},
        "atom_gaussians": {el: glob.glob(os.path.join(gaussians_dir, f"{el}_pseudodensity_*.g"))[0]
                           for el in elements},
        "cutoff": 8,
    }
    config = {
        "model": {"name": "singlenn", "get_forces": True, "num_layers": 3, "num_nodes": 10,
                  "batchnorm": True},
        "optim": {"force_coefficient": 0.04, "lr": 1e-3, "batch_size": 8, "epochs": 3,
                  "loss": "mse", "metric": "mae"},
        "dataset": {"raw_data": images, "fp_scheme": "gmp", "fp_params": fp_params, "elements": elements,
                    "save_fps": True, "scaling": {"type": "normalize", "range": (0, 1)}, "val_split": 0.1},
        "cmd": {"debug": False, "run_dir": run_dir, "seed": 1, "identifier": "user", "verbose": False},
    }
    if how == "patched":
        config["dataset"]["fp_backend"] = "fastfp"
    else:
        import fastfp.amptorch
        fastfp.amptorch.install()
    trainer = AtomsTrainer(config)
    trainer.train()
    assert type(trainer.train_dataset.descriptor).__module__.startswith("fastfp")
    history = trainer.net.history
    print(json.dumps({key: [h[key] for h in history] for key in ("train_loss", "valid_loss")}))
    """
)


@pytest.fixture(scope="module")
def compat_amptorch(amptorch_env, tmp_path_factory):
    """FASTFP_AMPTORCH_SRC with the stack patches only (0001-0008), extensions built:
    AMPTorch without fingerprint backends, for fastfp.amptorch.install()."""
    return built_clone(tmp_path_factory.mktemp("compat"), COMPAT_PATCHES)


def run_oc20_script(work: Path, script: Path, run_dir: Path, *args, entry_points: Path) -> dict:
    """Run ``script`` in ``work`` with the OC20 frames and valence-Gaussian
    pseudodensities of ``../shared`` (skip without them), a new ``run_dir`` and ``args``:
    the JSON of its last line of output."""
    from conftest import SHARED

    frames, gaussians = SHARED / "data" / "oc20_300_test.traj", SHARED / "gmp" / "valence_gaussians"
    if not frames.is_file() or not gaussians.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    run_dir.mkdir()
    out = run_python(work, str(script), str(frames), str(gaussians), str(run_dir), *args, entry_points=entry_points)
    assert out.returncode == 0, f"{run_dir.name}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_users_config_trains_as_through_install(patched_amptorch, compat_amptorch, entry_points, tmp_path):
    script = tmp_path / "user_config.py"
    script.write_text(USER_CONFIG)
    losses = {how: run_oc20_script(work, script, tmp_path / how, how, entry_points=entry_points)
              for how, work in (("patched", patched_amptorch), ("install", compat_amptorch))}
    for key in ("train_loss", "valid_loss"):
        assert len(losses["patched"][key]) == 3
        np.testing.assert_allclose(losses["patched"][key], losses["install"][key], rtol=1e-9)


#: one batch of all frames through the patched trainer (fp_backend "fastfp", no install()),
#: fastfp's network pass in pieces of PIECE_ATOMS atoms (argv: frames file, pseudodensity
#: folder, run directory, PIECE_ATOMS). Prints the losses and the number of passes in pieces.
IN_PIECES = textwrap.dedent(
    """
    import glob, json, os, sys
    import ase.io
    import fastfp.amptorch.model as fastfp_model
    from amptorch.trainer import AtomsTrainer

    frames_file, gaussians_dir, run_dir, piece_atoms = sys.argv[1:]
    fastfp_model.PIECE_ATOMS = int(piece_atoms)
    passes = []
    in_pieces = fastfp_model._InPieces.apply
    fastfp_model._InPieces.apply = lambda *args: passes.append(1) or in_pieces(*args)
    images = ase.io.read(frames_file, ":12")
    elements = sorted({s for atoms in images for s in atoms.get_chemical_symbols()})
    sigmas = [0.4, 1.0]
    fp_params = {
        "MCSHs": {str(order): {"groups": [1], "sigmas": sigmas} for order in range(3)},
        "atom_gaussians": {el: glob.glob(os.path.join(gaussians_dir, f"{el}_pseudodensity_*.g"))[0]
                           for el in elements},
        "cutoff": 6,
    }
    config = {
        "model": {"name": "singlenn", "get_forces": True, "num_layers": 2, "num_nodes": 8},
        "optim": {"force_coefficient": 0.04, "lr": 1e-3, "batch_size": len(images), "epochs": 2,
                  "loss": "mse", "metric": "mae"},
        "dataset": {"raw_data": images, "fp_scheme": "gmp", "fp_params": fp_params, "elements": elements,
                    "save_fps": False, "val_split": 0, "fp_backend": "fastfp"},
        "cmd": {"debug": False, "run_dir": run_dir, "seed": 1, "identifier": "pieces", "verbose": False},
    }
    trainer = AtomsTrainer(config)
    trainer.train()
    print(json.dumps({"train_loss": [h["train_loss"] for h in trainer.net.history], "passes": len(passes),
                      "atoms": sum(len(atoms) for atoms in images)}))
    """
)


def test_patched_trainer_takes_a_large_batch_in_pieces(patched_amptorch, entry_points, tmp_path):
    """Through the patched models' hook (0014), a batch larger than fastfp's PIECE_ATOMS
    goes through the network in pieces, as through install(), to the same losses."""
    script = tmp_path / "in_pieces.py"
    script.write_text(IN_PIECES)
    runs = {piece_atoms: run_oc20_script(patched_amptorch, script, tmp_path / str(piece_atoms), str(piece_atoms),
                                         entry_points=entry_points)
            for piece_atoms in (128, 10**9)}
    assert runs[128]["atoms"] > 128
    assert runs[128]["passes"] >= 2 and runs[10**9]["passes"] == 0  # a pass per step, each in pieces
    np.testing.assert_allclose(runs[128]["train_loss"], runs[10**9]["train_loss"], rtol=1e-9)
