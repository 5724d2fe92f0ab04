"""Serve the web page: `python app.py` (the same as `tqa serve`). The index must exist (`make run` builds it);
$TQA_INDEX names another index folder."""

import os
import sys

from tqa.errors import TqaError
from tqa.web import serve

if __name__ == "__main__":
    try:
        serve(os.environ.get("TQA_INDEX") or "index")
    except TqaError as exc:
        sys.exit(f"error: {exc}")
