"""Run ``tqa tune`` (the library call, with the stand-ins of tune_fakes.py) that kills itself (SIGKILL) at a chosen
point: used by test_tune_index.py.

    python -m tests.crash_tune INDEX STEP [NTH]

STEP: "train" (half way through saving the tuned model), "encode" (re-embedding with it), or one of crash_build's
publish steps ("rename", "replace", "checksum", "fsync") on its NTH call.
"""

from __future__ import annotations

import os
import sys

from tests.crash_build import arm
from tests.tune_fakes import Loader, Trainer


def main() -> None:
    index, step = sys.argv[1:3]
    nth = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    from tqa import store
    from tqa.tuning import tune_index

    if step in ("rename", "replace"):
        arm(os, step, nth)
    elif step in ("checksum", "fsync"):
        arm(store, {"checksum": "sha256_file", "fsync": "_fsync_tree"}[step], nth)
    tune_index(index, use_questions=False, trainer=Trainer(kill=step == "train", content="killed"),
               load=Loader(kill_on_encode=step == "encode"))
    print("done", flush=True)


if __name__ == "__main__":
    main()
