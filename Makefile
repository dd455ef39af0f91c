# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs everything it needs.
#
# torch is installed first, pinned by TORCH_SPEC, because an unpinned `pip install torch`
# can pull several GB of CUDA wheels. Override it for your machine, e.g.
#   make test TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test lint bench clean peers-venv peers

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(PY) pyproject.toml
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)
	$(PIP) install -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/dinolab demo

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

# lightly's DINO recipe runs in a venv of its own (torch, torchvision, lightly: dinolab needs none
# of them); benchmarks/peers.py trains it beside dinolab's presets and labels, same minutes.
PEERS_VENV ?= .venv-peers
PEERS_SPEC ?= torch==2.14.1 torchvision==0.29.1 lightly==1.6.0

$(PEERS_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install $(PEERS_SPEC)
	touch $@

peers-venv: $(PEERS_VENV)/.installed

peers: install peers-venv
	$(PY) benchmarks/peers.py --budget 10

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
