"""What runs in the ``amptorch-patched`` worker process (:func:`fastfp.harness.patched.remote`).

``python -m fastfp.harness.worker``, with AMPTorch with fastfp's patch series first on
its path, reads pickled requests on stdin and writes pickled replies on stdout:
``("build", stage, frames, options)`` builds the stage
(:func:`fastfp.harness.stages.build`), ``("run", collect)`` runs it once.
"""

from __future__ import annotations

import os
import pickle
import sys

from . import stages
from .backends import StageUnavailable


def serve() -> None:
    """The worker's loop (:func:`fastfp.harness.patched.remote`): its stdout carries the replies, so what the
    stage prints goes to stderr."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    run = None
    while True:
        try:
            message = pickle.load(requests)
        except EOFError:
            return
        try:
            if message[0] == "build":
                _, stage, frames, options = message
                run = stages.build(stage, "amptorch-patched", frames, **options)
                reply = ("ok", None)
            else:
                result = run()
                if not (message[1] or isinstance(result, (int, float))):
                    result = None  # dropped here, not sent
                reply = ("ok", result)
                del result
        except StageUnavailable as exc:
            reply = ("unavailable", str(exc))
        except Exception as exc:  # reported where the stage was asked for
            reply = ("error", f"{type(exc).__name__}: {exc}")
        pickle.dump(reply, replies)
        replies.flush()


if __name__ == "__main__":
    serve()
