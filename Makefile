# sam4dcap: make setup | demo | test | bench
SHELL := /bin/bash
ENV := . scripts/env.sh
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean

setup:
	@scripts/setup.sh

# Main job on the embedded default: video -> markers -> scaled model -> joint angles.
demo: setup
	@$(ENV) && scripts/demo.sh

# Every package's tests, each run with an isolated ROS_DOMAIN_ID (tests/conftest.py).
test: setup
	@$(ENV) && python -m pytest $(PYTEST_ARGS)

# Lint (ruff: ruff.toml) and type check of the core packages (mypy: mypy.ini). `make test` runs
# both too (tests/test_lint.py).
lint: setup
	@$(ENV) && ruff check . && mypy

# Benchmarks (not part of test): each prints one summary line, writes bench/results/*.md.
bench: setup
	@$(ENV) && bench/run_all.sh

clean:
	rm -rf build .pytest_cache out
