# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint bench proto clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[torch,deploy,dev,dp]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/fedsilo run examples/pneumonia/experiment.yaml --baselines

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/overhead.py

# Regenerate the gRPC code after editing the .proto (grpcio-tools is in the dev extra).
proto: install
	cd src && ../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. fedsilo/transport/grpc/fedsilo.proto

clean:
	rm -rf $(VENV) runs data/pneumonia
