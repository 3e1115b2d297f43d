"""The GPU GMP kernel's arithmetic on the CPU (:mod:`fastfp.gpu.emulate`, what
``scripts/fp32_error.py`` states float32's error with): the CPU kernels' results in
float64, within the float32 bound in float32. No GPU needed; with one (or the
simulator), float32 on the device keeps the same bound (test_device.py)."""

import numpy as np
import pytest

from fastfp.frames import pack_frames
from fastfp.gpu import emulate
from gpu_cases import DESCRIPTORS, FLOAT32_RTOL, assert_agree, descriptor, frames

GMP_FAMILY = [name for name in DESCRIPTORS if not name.startswith("Gaussian")]


@pytest.mark.parametrize("name", GMP_FAMILY)
def test_the_gpu_arithmetic_on_the_cpu(tmp_path, name):
    desc = descriptor(name, tmp_path)
    batch = list(frames().values())
    packed = pack_frames(batch, desc.numbers)
    cpu = desc.featurize(batch)
    double = emulate.featurize_packed(desc, packed, real=np.float64)
    assert_agree(double, cpu, where=name)
    single = emulate.featurize_packed(desc, packed, real=np.float32)
    assert single.fingerprints.dtype == np.float32 and single.fprimes.dtype == np.float32
    assert_agree(single, cpu, rtol=FLOAT32_RTOL, where=f"{name} float32")
    assert not np.array_equal(single.fprimes, double.fprimes.astype(np.float32))  # computed in float32
    plain = emulate.featurize_packed(desc, packed, derivatives=False)
    assert not plain.has_derivatives
    np.testing.assert_array_equal(plain.fingerprints, single.fingerprints)


def test_gaussian_is_refused(tmp_path):
    desc = descriptor("Gaussian cosine G2 G4", tmp_path)
    with pytest.raises(TypeError, match="emulates the GPU's GMP kernel only"):
        emulate.featurize_packed(desc, pack_frames([frames()["molecule"]], desc.numbers))
