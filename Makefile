# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint browser bench bench-scale bench-env proto clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[torch,deploy,ray,sklearn,dp,images,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/fedsilo run examples/pneumonia/experiment.yaml --baselines

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

# Headless Chromium for the report's browser test: Debian's package, installed when missing and root.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the report's browser test (about a minute)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "could not install chromium: tests/tracking/test_report_browser.py will skip"; \
	fi

test: lint browser
	$(BIN)/pytest

# The peer framework for side-by-side benchmarks, in its own environment (never mixed with fedsilo's).
bench-env: .bench/flower/.installed

.bench/flower/.installed:
	$(PY) -m venv .bench/flower
	.bench/flower/bin/python -m pip install -q --upgrade pip
	# flwr 1.42 needs a certifi newer than the package index here has; 1.41 is the newest that installs
	.bench/flower/bin/python -m pip install -q -c constraints.txt torch "flwr[simulation]<1.42"
	.bench/flower/bin/python -m pip install -q -e .
	touch $@

bench: install
	$(BIN)/python benchmarks/overhead.py

# The three benchmarks of issue 6, each fedsilo / plain PyTorch / Flower side by side (about 30 min on 2 cores).
bench-scale: install bench-env
	$(BIN)/python benchmarks/overhead.py --bench 1 --peer flower
	$(BIN)/python benchmarks/overhead.py --bench 1 --silos 50 --peer flower
	$(BIN)/python benchmarks/overhead.py --bench 2 --peer flower
	$(BIN)/python benchmarks/overhead.py --bench 3 --peer flower --timeout 400

# Regenerate the gRPC code after editing the .proto (grpcio-tools is in the dev extra).
proto: install
	cd src && ../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. fedsilo/transport/grpc/fedsilo.proto

clean:
	rm -rf $(VENV) runs data/pneumonia
