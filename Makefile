# Two commands for a fresh machine:
#   make up    install what is needed, then start API + dashboard + worker (embedded mode)
#   make test  install what is needed, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first and pinned: an unpinned torch can pull a multi-GB CUDA build. GPU hosts may pick
# another wheel: TORCH_SPEC="torch==2.13.0" is only the default.
TORCH_SPEC ?= torch==2.13.0

.PHONY: up test install install-test services test-tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e .
	bash scripts/install-corpus.sh
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

up: install
	$(BIN)/trainyard up

services:
	bash scripts/ensure-services.sh

# Debian's chromium (browser tests; never `playwright install`) and docker-compose (compose file check)
test-tools:
	bash scripts/install-test-tools.sh

test: install-test services test-tools
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
