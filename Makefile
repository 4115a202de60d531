# sam4dcap: make setup | demo | test | bench
SHELL := /bin/bash
ENV := . scripts/env.sh
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean

setup:
	@scripts/setup.sh

# Main job on the embedded default: video -> markers -> scaled model -> joint angles.
demo: setup
	@$(ENV) && scripts/demo.sh

# Every package's tests, each run with an isolated ROS_DOMAIN_ID (tests/conftest.py).
test: setup
	@$(ENV) && python -m pytest $(PYTEST_ARGS)

# Benchmarks (not part of test): each prints one summary line, writes bench/results/*.md.
bench: setup
	@$(ENV) && bench/run_all.sh

clean:
	rm -rf build .pytest_cache out
