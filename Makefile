# Two commands do all of the set-up on a fresh machine and are fast once set up:
#   make run   - the main job (demo training)
#   make test  - lint and the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: run test lint bench data setup gpu-data

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,export]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package when apt is there and we are root; otherwise
# the loader looks elsewhere and says how to get it (see README).
data:
	@if [ ! -d $(FASHION_MNIST) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null \
			|| echo "warning: could not install dataset-fashion-mnist; resnets train --download fetches it"; \
	fi

run: setup data
	$(VENV)/bin/resnets train

lint: setup
	$(VENV)/bin/ruff check resnets tests benchmarks hubconf.py
	$(VENV)/bin/ruff format --check resnets tests benchmarks hubconf.py
	$(VENV)/bin/lint-imports

test: setup data lint
	$(VENV)/bin/python -m pytest -q -n logical --dist loadfile

bench: setup data
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m benchmarks

# What benchmarks/gpu.sh needs on a GPU machine without network, under data/ (git-ignored): the
# Fashion-MNIST files and wheels of the two pure dependencies a bare torch image may lack.
gpu-data: data
	mkdir -p data/fashion-mnist data/wheels
	cp $(FASHION_MNIST)/*.gz data/fashion-mnist/
	$(PY) -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 \
		--python-version 3.10 -d data/wheels tqdm safetensors
