# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv if it is absent and install the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: demo test lint install clean-demo

install: $(VENV)/.installed

# Without CUDA, torch==2.13.0 first, the CPU build from PyTorch's index where it can be reached
# (scripts/install_torch.sh says which); a bare `torch` would pull a multi-GB CUDA build.
# The project's own range (torch>=2.2) is then already met.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	bash scripts/install_torch.sh $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=10

lint: install
	$(VENV)/bin/ruff check datagen ormbg tests scripts hf_space
	$(VENV)/bin/ruff format --check datagen ormbg tests scripts hf_space

demo: install
	HF_HUB_OFFLINE=1 $(PY) scripts/demo.py --out runs/demo

clean-demo:
	rm -rf runs/demo
