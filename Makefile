# The two commands of the README: `make run` and `make test`. Both create the environment when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test index lint clean chromium tesseract bench

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: this pin is a CPU build; left to the resolver, pip would pull a multi-GB CUDA build.
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

# `make run CORPUS=DIR` indexes and serves another folder. Its index goes to INDEX: by default index/ for the
# shipped corpus/ and index-NAME/ (beside this Makefile) for a folder named NAME, so that one never replaces the
# other. PORT: the page's port on 127.0.0.1.
CORPUS ?= corpus
PORT   ?= 7860
ifeq ($(origin INDEX),undefined)
INDEX := $(shell c=$$(cd -- '$(CORPUS)' 2>/dev/null && pwd -P || printf '%s' '$(CORPUS)'); \
	if [ "$$c" = "$$(cd corpus 2>/dev/null && pwd -P)" ]; then echo index; \
	else printf 'index-%s\n' "$$(basename -- "$$c")"; fi)
endif

index: $(VENV)/.installed
	$(BIN)/tqa index '$(CORPUS)' --index '$(INDEX)'

run: index
	$(BIN)/tqa serve --index '$(INDEX)' --host 127.0.0.1 --port '$(PORT)'

# Browser tests drive Debian's chromium (Playwright is never allowed to download a browser of its own).
chromium:
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# Scanned PDF pages are read by Debian's Tesseract, with English and Dutch language data.
tesseract:
	{ command -v tesseract >/dev/null 2>&1 && tesseract --list-langs 2>/dev/null | grep -qx nld; } || \
		{ apt-get update -qq && apt-get install -y -qq tesseract-ocr tesseract-ocr-eng tesseract-ocr-nld >/dev/null; }

# the Ray build's tests start a real local cluster: they need the ray extra; the keyword search's compiled adds are
# tested against numpy's: the fast extra
$(VENV)/.installed-extras: $(VENV)/.installed
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test,ray,fast]'
	touch $@


# The treaty texts the second question set (eval/treaties/questions.jsonl) is about, read in place, never copied:
# `make test TREATIES=DIR` when they are elsewhere.
TREATIES ?= $(firstword $(wildcard ../shared/data/treaties ../../shared/data/treaties /work/shared/data/treaties))

test: $(VENV)/.installed $(VENV)/.installed-extras chromium tesseract
	$(BIN)/python -m pytest
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	# the retrieval-quality gate (thresholds: eval/thresholds.toml) on a verified copy of the shipped corpus:
	# what a user adds to corpus/ (uploads included) is served by `make run` but never measured here
	rm -rf build/eval-index build/eval-corpus
	$(BIN)/python -m tests.shipped_corpus build/eval-corpus
	$(BIN)/tqa eval --corpus build/eval-corpus --index build/eval-index
	# the same gate on the treaty question set ([questions.treaties] in eval/thresholds.toml)
	# (a machine without the texts says so and skips this gate; TREATIES=DIR given and missing is an error)
	rm -rf build/eval-treaties-index
	@if [ -d '$(TREATIES)' ]; then \
		echo "$(BIN)/tqa eval --questions eval/treaties/questions.jsonl --corpus '$(TREATIES)' --index build/eval-treaties-index"; \
		$(BIN)/tqa eval --questions eval/treaties/questions.jsonl --corpus '$(TREATIES)' --index build/eval-treaties-index; \
	elif [ '$(origin TREATIES)' = 'command line' ] || [ '$(origin TREATIES)' = 'environment' ]; then \
		echo "make test: no treaty texts at '$(TREATIES)'" >&2; exit 1; \
	else \
		echo "make test: treaty gate skipped: no treaty texts in ../shared/data/treaties (pass TREATIES=DIR)" >&2; \
	fi

# The benchmark suite (bench/README.md); writes bench/results.md. `make bench QUICK=1` runs the quick version;
# `make bench SCALE=1` instead builds and answers from ten million chunks (bench/results-scale.md, about 2 hours).
bench: $(VENV)/.installed
	$(BIN)/pip install --disable-pip-version-check -q -e '.[bench,fast]'
	$(BIN)/python bench/run.py $(if $(QUICK),--quick)$(if $(SCALE), --scale)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	# what tqa writes in index/ (its marker, pointer, generations, leftovers of killed builds), the venv and build/
	rm -rf $(VENV) build index/CURRENT index/g-* index/.tmp-g-* index/.retired-g-* index/.CURRENT.g-* index/.lock index/.tqa-index
