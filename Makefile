# gaussmle developer entry points. `make help` lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -E '^[a-zA-Z_.-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.deps: requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

.PHONY: install
install: $(VENV)/.deps build ## Create .venv with all dev dependencies and build the extension (release)

.PHONY: build
build: $(VENV)/.deps ## Build the Rust extension in release mode into the venv (editable)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/maturin develop --release --quiet

.PHONY: demo
demo: install ## Set everything up and run the skittles demo
	$(PY) -m gaussmle demo

.PHONY: lint
lint: install ## Lint Rust (fmt, clippy) and Python (ruff, mypy --strict, stubtest of the built module)
	cargo fmt --check
	cargo clippy --all-targets --all-features -- -D warnings
	cargo clippy --all-targets --no-default-features -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy
	$(PY) -m mypy.stubtest gaussmle._core

.PHONY: test-rust
test-rust: ## Pure-Rust core tests (no Python needed)
	cargo test --no-default-features

.PHONY: test-py
test-py: install ## Python test suite
	$(PY) -m pytest tests

.PHONY: fuzz
fuzz: ## Fuzz the Rust core for 60 s (stable toolchain, offline once crates are fetched)
	cargo run --release --locked --manifest-path fuzz/Cargo.toml -- --seconds 60 --corpus fuzz/corpus/seeds.txt

.PHONY: fuzz-quick
fuzz-quick: ## 8-second core fuzz (part of `make test`)
	cargo run --release --locked --manifest-path fuzz/Cargo.toml -- --seconds 8 --corpus fuzz/corpus/seeds.txt

.PHONY: test
test: install lint test-rust fuzz-quick test-py ## Set everything up, lint, and run the whole test suite (cargo test, core fuzz, pytest)

.PHONY: bench
bench: install ## Benchmarks (pytest-benchmark) and the ratio table
	$(PY) -m pytest benches --benchmark-only
	$(PY) benches/report.py --runs 3

.PHONY: clean
clean: ## Remove build products and the venv
	rm -rf target $(VENV) python/gaussmle/*.so
