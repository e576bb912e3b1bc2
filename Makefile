# The commands the README gives. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= serve_config.yaml
# `serve run` starts a private local Ray instance; RAY_ADDRESS=auto (or host:port) runs the
# app on an existing cluster instead (by default Ray would attach to the last one started).
RAY_ADDRESS ?= local
# Ray's CLI needs token auth for local clusters; the model files ship in a PyPI package.
export RAY_AUTH_MODE ?= token
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
# The Ray processes' own switches (HAProxy ingress, throughput-optimized Serve): one file for
# `make run`, the bench, the image and the cluster. A value set in the environment wins. Only
# `serve run` gets them: in a driver such as pytest, throughput mode would move handles' routers
# onto the caller's event loop, which synchronous callers do not have.
RAY_SERVE_ENV_FILE := configs/ray-serve.env
RAY_SERVE_ENV := $(foreach line,$(shell grep -E '^[A-Z_]+=' $(RAY_SERVE_ENV_FILE)),\
  $(firstword $(subst =, ,$(line)))=$(or $($(firstword $(subst =, ,$(line)))),$(word 2,$(subst =, ,$(line)))))

.PHONY: setup setup-dev migrate run test bench bench-bulk load docs image

# The checkout is installed editable (pyproject.toml): its packages import wherever the venv's
# `serve`, `ray` and `python` run, e.g. `serve status` outside the repository root.
$(BIN)/.runtime: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

setup: $(BIN)/.runtime
setup-dev: $(BIN)/.dev

# Schema of the database in DATABASE_URL (default: ./sentiment.db, SQLite).
migrate: setup
	$(BIN)/alembic upgrade head

# Serve on http://127.0.0.1:8000 in the foreground (`serve run` under deployments/local_service.py:
# loopback only, every process gone within seconds of Ctrl-C or SIGTERM; SERVE_HTTP_HOST=0.0.0.0
# opens the API to the network). OTEL_EXPORTER_OTLP_ENDPOINT (and the other OTEL_* variables)
# in the environment turn tracing on: every Ray process inherits them, with the Ray Serve
# switches derived from them.
# `make run SERVICE_CPUS=0` holds the service (every Ray process) to core 0 (taskset -c).
SERVICE_CPUS ?=
run: migrate
	ray_tracing_env=$$($(BIN)/python -m deployments.tracing_env) && \
	exec env $(RAY_SERVE_ENV) $$ray_tracing_env $(if $(SERVICE_CPUS),taskset -c $(SERVICE_CPUS)) \
	$(BIN)/python -m deployments.local_service --address $(RAY_ADDRESS) $(CONFIG)

test: setup-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Ours against the naive baseline in one run (~10 min on 2 cores): table + bench/results.json.
bench: setup-dev
	$(BIN)/python -m bench.run_bench $(BENCH_ARGS)

# Bulk scoring (Ray Data) against the raw model rate and the service (~15 min on 2 cores):
# 100,000 texts with the real model, 1,000,000 with the fast one; writes bench/bulk.json.
bench-bulk: setup-dev
	$(BIN)/python -m bench.bulk $(BENCH_BULK_ARGS)

# 500 locust users against a running service (`make run`): bench/load.json. Users honour
# Retry-After; LOAD_ARGS="--start-service --service-cpus 0" loads a private service on core 0.
LOAD_HOST ?= http://127.0.0.1:8000
load: setup-dev
	$(BIN)/python -m bench.run_load --host $(LOAD_HOST) $(LOAD_ARGS)

# The documentation site (docs/, mkdocs.yml): served with live reload on http://127.0.0.1:8001;
# `make docs DOCS_CMD=build` writes it to site/ and fails on a broken link (--strict).
DOCS_CMD ?= serve --dev-addr 127.0.0.1:8001
docs: setup-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs $(DOCS_CMD) --strict

# The container image (Dockerfile) with docker, or podman where docker has no daemon; prints
# its size. IMAGE_BUILD_ARGS go to the build, e.g. "--build-arg BASE_IMAGE=..." or a private
# package index (docs/image.md).
IMAGE ?= sentiment-serve:0.1.0
IMAGE_BUILD_ARGS ?=
image:
	@engine=$$(if docker info >/dev/null 2>&1; then echo docker; \
	  elif command -v podman >/dev/null; then echo podman; fi); \
	test -n "$$engine" || { echo "make image: neither docker (with a daemon) nor podman" >&2; exit 1; }; \
	echo "$$engine build -t $(IMAGE) $(IMAGE_BUILD_ARGS) ."; \
	$$engine build -t $(IMAGE) $(IMAGE_BUILD_ARGS) . && \
	$$engine image inspect --format '{{.Size}}' $(IMAGE) | \
	  awk '{ printf "$(IMAGE): %.2f GB (%d bytes)\n", $$1 / 1e9, $$1 }'
