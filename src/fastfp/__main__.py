"""``python -m fastfp``: the ``fastfp`` command line (:mod:`fastfp.cli`)."""

import sys

from .cli import main

sys.exit(main())
