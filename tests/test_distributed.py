"""Sharded stores written on a Dask LocalCluster of 2 workers: equal to the serial run bit
for bit, a worker killed mid-run, interrupted runs (Ctrl-C, SIGTERM) and their resume,
refused resumes, and the SLURM job script dask-jobqueue would submit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="needs dask.distributed (the 'cluster' extra)")
import psutil  # noqa: E402  (a dependency of distributed)

from conftest import SHARED  # noqa: E402
from fastfp.cluster import check_cluster, connect  # noqa: E402
from fastfp.config import resolve_config  # noqa: E402
from fastfp.framefile import FrameFile  # noqa: E402
from fastfp.frames import elements_of  # noqa: E402
from fastfp.store import StoreError, _Shard, featurize_to_store, open_store  # noqa: E402

OC20 = SHARED / "data" / "oc20_300_test.traj"
PSP = SHARED / "gmp" / "psp_v3"
N_FRAMES, SHARD = 24, 6

pytestmark = pytest.mark.skipif(not (OC20.is_file() and PSP.is_dir()),
                                reason=f"shared data (frames and pseudodensities) not found at {SHARED}")


def gmp_config(sigmas=(0.4, 0.8, 1.2, 1.6, 2.0)) -> dict:
    return {"fp_scheme": "gmpordernorm",
            "fp_params": {"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": list(sigmas)}, "cutoff": 8.0,
                          "atom_gaussians": {"<El>": str(PSP / "<El>_pseudodensity.g")}}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("distributed")
    ase.io.write(d / "frames.traj", ase.io.read(OC20, f":{N_FRAMES}"))
    ase.io.write(d / "long.traj", ase.io.read(OC20, ":60"))
    (d / "config.json").write_text(json.dumps(gmp_config()))
    frames = FrameFile(d / "frames.traj")
    config = resolve_config(gmp_config(), elements=elements_of(frames))
    serial = featurize_to_store(frames, config, d / "serial.store", shard_frames=SHARD)
    assert serial["computed"] == [0, 1, 2, 3]
    return dict(dir=d, frames=frames, config=config, serial=d / "serial.store")


@pytest.fixture(scope="module")
def client():
    with connect("local:2") as c:
        yield c


def assert_same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def temporaries(root: Path) -> list:
    return [p for p in root.rglob("*.tmp")]


def test_cluster_equals_serial(data, client, tmp_path):
    out = tmp_path / "cluster.store"
    summary = featurize_to_store(data["frames"], data["config"], out, shard_frames=SHARD, cluster=client)
    assert summary["computed"] == [0, 1, 2, 3] and summary["n_frames"] == N_FRAMES
    assert_same_files(out, data["serial"])  # manifest and every shard, bit for bit
    store, direct = open_store(out), open_store(data["serial"])
    np.testing.assert_array_equal(store[5:14].fprimes, direct[5:14].fprimes)  # across a shard boundary


def test_existing_scheduler_address(data, client, tmp_path):
    """``cluster="tcp://HOST:PORT"``: the workers of a scheduler started elsewhere."""
    out = tmp_path / "tcp.store"
    summary = featurize_to_store(data["frames"], data["config"], out, shard_frames=SHARD,
                                 cluster=client.scheduler.address)
    assert_same_files(out, data["serial"])
    assert set(summary["peak_rss"]) <= set(client.run(os.getpid).values())  # run by the workers


def test_worker_killed_mid_run(data, client, tmp_path):
    """SIGKILL to the worker writing a shard: the scheduler reruns its task elsewhere."""
    out = tmp_path / "killed.store"
    result = {}
    run = threading.Thread(target=lambda: result.update(featurize_to_store(
        data["frames"], data["config"], out, shard_frames=SHARD, cluster=client)))
    run.start()
    deadline = time.monotonic() + 120
    while not (found := [p for p in out.glob(".shard-*.tmp")]) and run.is_alive():
        assert time.monotonic() < deadline
        time.sleep(0.002)
    assert found, "no shard was being written"
    pid = int(re.match(r"\.shard-\d+\.h5\.(\d+)-", found[0].name).group(1))  # AtomicPath names the writer
    assert pid in client.run(os.getpid).values()
    os.kill(pid, signal.SIGKILL)
    run.join(300)
    assert not run.is_alive() and result["computed"] == [0, 1, 2, 3]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert temporaries(out) == []
    assert_same_files(out, data["serial"])


def test_resume_refuses_other_settings(data, tmp_path):
    out = tmp_path / "s.store"
    featurize_to_store(data["frames"], data["config"], out, shard_frames=SHARD)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = resolve_config(gmp_config(sigmas=(0.4, 0.8)), elements=data["config"]["elements"])
    with pytest.raises(StoreError, match=r"different descriptor settings.*fp_params\.MCSHs\.sigmas.*--overwrite"):
        featurize_to_store(data["frames"], other, out, shard_frames=SHARD)
    with pytest.raises(StoreError, match=r"differing: settings\.fprimes_dtype, shard_frames"):
        featurize_to_store(data["frames"], data["config"], out, shard_frames=SHARD + 1, fprimes_dtype="float32")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    again = featurize_to_store(data["frames"], data["config"], out, shard_frames=SHARD)
    assert again["computed"] == []  # complete: nothing to do
    replaced = featurize_to_store(data["frames"], other, out, shard_frames=SHARD, overwrite=True)
    assert replaced["computed"] == [0, 1, 2, 3] and open_store(out).n_features == 8


def test_resume_after_lost_shards(data, tmp_path):
    """Shards lost (or never written) are the only ones recomputed."""
    out = tmp_path / "s.store"
    featurize_to_store(data["frames"], data["config"], out, shard_frames=SHARD)
    (out / "shard-00001.h5").unlink()
    (out / "shard-00003.h5").write_bytes(b"damaged")
    with pytest.raises(StoreError, match="shard file"):
        open_store(out)[6]
    summary = featurize_to_store(data["frames"], data["config"], out, shard_frames=SHARD)
    assert summary["computed"] == [1, 3]
    assert_same_files(out, data["serial"])


# -- interrupted command lines ------------------------------------------------------------


def _default_sigint():
    """In the child before it starts Python: Ctrl-C's default action, so that Python turns
    it into KeyboardInterrupt even where this process ignores SIGINT (the suite started as
    a background job of a shell without job control), which the child would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


#: AMPTorch's old stack (skorch 0.10, imported by the LMDB writer for AMPTorch's scaler
#: classes) warns about pkg_resources at import, in every process: not the command's output
IMPORT_WARNINGS = "ignore:pkg_resources is deprecated:UserWarning"


def cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH", "")]),
               PYTHONWARNINGS=IMPORT_WARNINGS)
    return subprocess.Popen([sys.executable, "-m", "fastfp", *map(str, args)], env=env, preexec_fn=_default_sigint,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def interrupt_when_started(proc, out: Path, sig) -> tuple[str, float, list]:
    """Send ``sig`` once a shard is complete and another is being written; returns stderr,
    the seconds from the signal to the exit, and the processes that were the command's
    children. SIGINT goes to the process group, as a terminal's Ctrl-C does."""
    deadline = time.monotonic() + 240
    while not (list(out.glob("shard-*")) and list(out.glob(".shard-*.tmp"))):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    children = psutil.Process(proc.pid).children(recursive=True)
    t0 = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return err, time.monotonic() - t0, children


def assert_nothing_left(tmp_path, children):
    assert temporaries(tmp_path) == []
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], alive


FEATURIZE_RUNS = [(None, signal.SIGINT), (None, signal.SIGTERM), ("local:2", signal.SIGINT),
                  ("local:2", signal.SIGTERM)]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("cluster, sig", FEATURIZE_RUNS, ids=lambda x: getattr(x, "name", str(x)))
def test_featurize_interrupted_then_resumed(data, tmp_path, cluster, sig):
    out = tmp_path / "out.store"
    args = [data["dir"] / "long.traj", "--config", data["dir"] / "config.json", "--out", out, "--derivatives",
            "--shard-frames", 4, "--chunk-frames", 2, "--quiet"] + (["--cluster", cluster] if cluster else [])
    proc = cli("featurize", *args)
    err, seconds, children = interrupt_when_started(proc, out, sig)
    assert proc.returncode == 130 and err.splitlines() == ["fastfp featurize: interrupted"], err  # one line
    assert seconds < 20
    assert_nothing_left(tmp_path, children)
    # no shard looks complete unless it is; the store as a whole is incomplete
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    present = sorted(out.glob("shard-*.h5"))
    assert 0 < len(present) < 15
    for p in present:
        _Shard(p, dict(n_frames=4, config_hash=manifest["config_hash"], n_features=20, has_derivatives=True,
                       fprimes_dtype="float64")).close()
    with pytest.raises(StoreError, match="incomplete store"):
        open_store(out)
    if cluster == "local:2" and sig == signal.SIGTERM:  # resume once: only the missing shards are computed
        frames = FrameFile(data["dir"] / "long.traj")
        config = resolve_config(data["dir"] / "config.json", elements=elements_of(frames))
        summary = featurize_to_store(frames, config, out, shard_frames=4, chunk_frames=2)
        assert summary["computed"] == sorted(set(range(15)) - {int(p.name[6:11]) for p in present})
        assert len(open_store(out)) == 60
        np.testing.assert_array_equal(open_store(out)[21:23].fprimes, open_store(data["serial"])[21:23].fprimes)


# -- SLURM ---------------------------------------------------------------------------------


def test_no_dashboard_unless_asked():
    """Clusters started here run no dashboard: a second one does not warn that port 8787
    is taken (it used to)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with connect("local:1") as first, connect("local:1") as second:
            assert first.submit(int, "1").result() + second.submit(int, "2").result() == 3
    assert not [w for w in caught if "8787" in str(w.message)], [str(w.message) for w in caught]


def test_slurm_job_script():
    """The job script dask-jobqueue would submit for ``--cluster slurm``, from Dask's config."""
    pytest.importorskip("dask_jobqueue", reason="needs dask-jobqueue (the 'cluster' extra)")
    import dask

    from fastfp.cluster import slurm_cluster

    settings = {"jobqueue.slurm.cores": 16, "jobqueue.slurm.memory": "64GB", "jobqueue.slurm.processes": 4,
                "jobqueue.slurm.account": "oc20-project", "jobqueue.slurm.queue": "cpu",
                "jobqueue.slurm.walltime": "04:00:00",
                "jobqueue.slurm.job-script-prologue": ["module load python/3.11", "source ~/envs/fastfp/bin/activate"],
                "jobqueue.slurm.scheduler-options": {"dashboard_address": None}}
    with dask.config.set(settings):
        with slurm_cluster() as cluster:
            script = cluster.job_script()
    for line in ("#SBATCH -A oc20-project", "#SBATCH -p cpu", "#SBATCH -t 04:00:00", "#SBATCH -n 1",
                 "#SBATCH --cpus-per-task=16", "#SBATCH --mem=60G", "module load python/3.11",
                 "source ~/envs/fastfp/bin/activate", "export FASTFP_NUM_THREADS=1", "--nworkers 4", "--nthreads 4"):
        assert line in script, (line, script)
    # the prologue runs before the workers start
    assert script.index("export FASTFP_NUM_THREADS=1") < script.index("distributed.cli.dask_worker")


@pytest.mark.parametrize("text", ["local:0", "local", "slurm:x", "tcp://host", "http://h:1", "local:2:3"])
def test_bad_cluster_specs(text):
    with pytest.raises(ValueError, match="expected local:N"):
        check_cluster(text)
    assert check_cluster("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"


def test_cluster_needs_a_frames_file(data, tmp_path):
    with pytest.raises(ValueError, match="needs the frames in a file"):
        featurize_to_store(ase.io.read(OC20, ":2"), data["config"], tmp_path / "x.store", cluster="local:2")
    assert not (tmp_path / "x.store").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("cluster, sig", [(None, signal.SIGINT), ("local:2", signal.SIGTERM)],
                         ids=lambda x: getattr(x, "name", str(x)))
def test_lmdb_interrupted(data, tmp_path, cluster, sig):
    pytest.importorskip("torch_geometric", reason="fastfp lmdb needs the 'torch' extra")
    from fastfp.amptorch.lmdb import read_lmdb_setup

    out = tmp_path / "out.lmdb"
    proc = cli("lmdb", data["dir"] / "long.traj", "--config", data["dir"] / "config.json", "--out", out,
               "--shard-frames", 4, "--chunk-frames", 2, "--quiet", *(["--cluster", cluster] if cluster else []))
    err, seconds, children = interrupt_when_started(proc, out, sig)
    assert proc.returncode == 130 and err.splitlines() == ["fastfp lmdb: interrupted"], err  # one line
    assert seconds < 20
    assert_nothing_left(tmp_path, children)
    assert (out / "manifest.json").is_file(), sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and "statistics" in manifest  # pass 1 done: a resume skips it
    present = sorted(out.glob("shard-*.lmdb"))
    assert 0 < len(present) < 15
    assert all(read_lmdb_setup(p)["length"] == 4 for p in present)
