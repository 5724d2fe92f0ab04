"""Serve the web page on the default index: `python app.py` (the index must exist; `make run` builds it)."""

from tqa.web import serve

if __name__ == "__main__":
    serve()
