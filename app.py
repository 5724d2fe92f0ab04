"""Serve the web page: `python app.py` (the same as `tqa serve`). The index must exist (`make run` builds it);
$TQA_INDEX names another index folder."""

import sys

from tqa.config import Settings
from tqa.errors import TqaError
from tqa.web import serve

if __name__ == "__main__":
    try:
        serve(Settings.from_env().index_dir)
    except TqaError as exc:
        sys.exit(f"error: {exc}")
