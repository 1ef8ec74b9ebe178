# fleetstream: `make run` starts everything, `make test` checks everything. Both set up what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE      ?= $(HOME)/.cache/fleetstream
UV_VERSION := 0.13.8
UV         := $(CACHE)/uv-tool/bin/uv
VENV       := .venv
BIN        := $(VENV)/bin
APT_PACKAGES := kcat chromium
export UV_CACHE_DIR := $(CACHE)/uv
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

.PHONY: help setup system-deps python-deps jars run up down test lint fmt unit chaos integration clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: system-deps python-deps jars ## install everything (idempotent): Debian packages, .venv, JVM jars

system-deps:
	@command -v java >/dev/null || { echo "Java 17+ is required (Debian: apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required to fetch the pinned jars (Debian: apt-get install maven)"; exit 1; }
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(UV):
	python3 -m venv $(CACHE)/uv-tool
	$(CACHE)/uv-tool/bin/pip install -q uv==$(UV_VERSION)

python-deps: $(UV)
	@$(UV) sync --frozen --python python3 --quiet

jars: python-deps
	@$(BIN)/fleetstream jars fetch

run: setup ## start everything in the foreground: stack, reference data, simulator (Ctrl-C stops all)
	$(BIN)/fleetstream run

up: setup ## start the local stack in the background
	$(BIN)/fleetstream up --detach

down: ## stop everything `make run` / `make up` started
	@if [ -x $(BIN)/fleetstream ]; then $(BIN)/fleetstream down; else echo "nothing to stop (no .venv)"; fi

# mypy's incremental cache beside uv's: a fresh clone's check reuses what an earlier one learnt of
# the unchanged modules (it compares their contents), about 35 s less than a cold check
lint: python-deps ## ruff (format + lint) and mypy
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	MYPY_CACHE_DIR=$(CACHE)/mypy $(BIN)/mypy

fmt: python-deps ## format and fix what ruff can
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

test: setup lint ## set up, lint, type-check and run every test
	$(BIN)/pytest

unit: python-deps ## only the tests that need no running services
	$(BIN)/pytest tests/unit

CHAOS_FIGURES := $(CURDIR)/.fleetstream-chaos-figures.jsonl
chaos: setup ## the chaos suite's long run (ten kills of the stream; about 20 minutes); writes docs/reliability.md's figures
	@rm -f $(CHAOS_FIGURES)
	FLEETSTREAM_CHAOS_KILLS=10 FLEETSTREAM_CHAOS_REPORT=$(CHAOS_FIGURES) $(BIN)/pytest -s -o timeout=3600 tests/chaos
	$(BIN)/python -m fleetstream.testing reliability docs/reliability.md $(CHAOS_FIGURES)
	@rm -f $(CHAOS_FIGURES)

clean: down ## remove the local state (.fleetstream) and the venv; the download cache stays
	rm -rf .fleetstream $(VENV)
