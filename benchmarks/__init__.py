"""asv benchmarks of fastfp against AMPTorch (see ``asv.conf.json`` and ``fastfp bench``).

One module per concern: ``featurize`` (descriptors, frames and atoms), ``pipeline``
(scaling, store, collation, training epoch, end-to-end preprocessing), ``memory``
(``peakmem_``), ``ratios`` (AMPTorch/fastfp time ratios measured in one process),
``roofline`` (each kernel's share of the machine's roof that binds it). The stages
themselves live in :mod:`fastfp.harness.stages`.
"""

import os

# AMPTorch's and fastfp's progress bars would fill asv's --show-stderr output
os.environ.setdefault("TQDM_DISABLE", "1")
