# deepcloud: `make demo` runs the whole loop on this machine; `make test` runs the suite.
# TARGET=local (default) runs everything as local processes; TARGET=container runs the same loop in the two images
# under Docker (`make images` builds them here); TARGET=aws drives the Pulumi stack in infra/
# (pulumi up first; see the README's AWS walkthrough). Settings such as BACKEND, MAX_COST, RUN or RESUME reach
# ops/ as environment variables: make exports command-line variables.

.DEFAULT_GOAL := help
SHELL := bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TARGET ?= local
HP ?=
export TARGET

OPS := $(PY) -m ops --target $(TARGET)
HP_ARGS := $(if $(strip $(HP)),--hp '$(HP)')

.PHONY: help
help:  ## Show this help
	@printf 'Usage: make <target> [TARGET=local|container|aws] [HP="epochs=10 lr=0.002"] [DATASET=digits|mnist] [BACKEND=ecs|sagemaker] [INSTANCE_COUNT=1] [MAX_COST=5] [PORT=8080]\n\n'
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements/dev.txt requirements/constraints.txt requirements/bench.txt trainer/requirements.txt \
		serving/requirements.txt ops/requirements.txt infra/requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 and re-run make setup"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: $(PYTHON) is not Python 3.11 (torch 2.13.0 is pinned for 3.11): run make setup PYTHON=python3.11"; exit 1; }
	@echo "setup: creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV)
	@echo "setup: installing torch 2.13.0 (the CPU build here) and the pinned packages of requirements/dev.txt; pip names each as it goes (about 2.5 min on a fresh machine)"
	@$(VENV)/bin/pip install --disable-pip-version-check --progress-bar off -r requirements/dev.txt
	@touch $@

# The project itself, editable and without dependencies (they are the pins above): infra, trainer, serving and ops
# import from any folder, as Pulumi runs infra/ and infra/policy/ (only that folder on sys.path).
$(VENV)/.project: $(VENV)/.installed pyproject.toml
	@$(VENV)/bin/pip install --disable-pip-version-check --quiet --no-deps --no-build-isolation --editable .
	@touch $@
	@echo "setup: done ($(VENV), deepcloud installed editable)"

.PHONY: setup
setup: $(VENV)/.project  ## Create .venv with pip, install the pinned dependencies (CPU torch here) and the project

.PHONY: data
data: setup  ## Write the dataset as PNG train/validation/test channels (DATASET=digits: scikit-learn 8x8, the default; mnist: 5,000 real MNIST digits)
	@$(OPS) data

.PHONY: images
images: setup  ## Build both images here from their Dockerfiles: local Debian base, CPU torch, no network in the build
	@$(PY) -m ops --target container images

.PHONY: train
train: data  ## Train: a local SageMaker-style job (TARGET=container: in the image), or TARGET=aws on GPU capacity (HP="name=value ..."; BACKEND=sagemaker INSTANCE_COUNT=N: N hosts)
	@$(OPS) train $(HP_ARGS)

.PHONY: deploy
deploy: setup  ## Serve the latest model on 127.0.0.1:8080 (PORT= moves it; TARGET=container: in the image), or TARGET=aws on the SageMaker endpoint
	@$(OPS) deploy

.PHONY: predict
predict: setup  ## Send the held-out test images to the endpoint; print accuracy and latency
	@$(OPS) predict

.PHONY: destroy
destroy: setup  ## Stop what runs and remove it (local or container state, or TARGET=aws: the stack, then audit leftovers)
	@$(OPS) destroy

.PHONY: preflight
preflight: setup  ## TARGET=aws: credentials, pulumi stack outputs, Docker and GPU quotas, before anything costs money
	@$(OPS) preflight

.PHONY: rollback
rollback: setup  ## TARGET=aws: deploy the previous model again (history in the artifacts bucket)
	@$(OPS) rollback

.PHONY: status
status: setup  ## TARGET=aws: what runs in the stack and what it costs per hour
	@$(OPS) status

.PHONY: logs
logs: setup  ## TARGET=aws: the newest run's log (RUN=<run-id>; ENDPOINT=1 for the endpoint)
	@$(OPS) logs

.PHONY: cost
cost: setup  ## The stack's idle cost a month and running cost an hour, by component, before anything exists (SET="k=v ...")
	@$(PY) -m infra.cli cost $(if $(strip $(SET)),--set '$(SET)')

.PHONY: prices
prices: setup  ## Refresh ops/aws/prices.toml from the AWS Price List API for the stack's region and instance types
	@$(PY) -m ops.aws.pricelist

.PHONY: demo
demo: setup  ## setup, data, train, deploy, predict, destroy in one go, with a summary (DATASET=mnist: the Keras convnet on real MNIST)
	@$(OPS) demo $(HP_ARGS)

.PHONY: test
test: setup  ## Run the whole test suite (slow tests included)
	$(PY) -m pytest --durations=20

.PHONY: test-fast
test-fast: setup  ## Run the tests not marked slow
	$(PY) -m pytest -m 'not slow'

.PHONY: bench-train
bench-train: setup  ## Trainer vs a bare PyTorch loop on the same model and data: samples/s, checkpoint overhead, memory
	$(PY) -m bench.train

.PHONY: bench-serve
bench-serve: setup  ## Our server vs TorchServe and bare Starlette floors (model, .mar handler, inference.py): requests/s, p50/p99, memory
	$(PY) -m bench.serve

.PHONY: infra-test
infra-test: setup  ## The Pulumi program under mocks and its policy pack, offline (no Pulumi CLI needed)
	$(PY) -m pytest tests/infra -q

.PHONY: infra-preview
infra-preview: setup  ## pulumi preview with the policy pack (needs the Pulumi CLI and AWS credentials)
	$(PY) -m infra.cli preview

.PHONY: lint
lint: setup  ## ruff check, ruff format --check, mypy over the four rooms, and hadolint on both Dockerfiles
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint --failure-threshold warning trainer/Dockerfile serving/Dockerfile

.PHONY: format
format: setup  ## Rewrite the code in ruff's format and apply ruff's safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: clean
clean:  ## Remove caches and build leftovers (keeps .venv, the images and .deepcloud/: make destroy removes what runs)
	rm -rf .pytest_cache .ruff_cache .mypy_cache .wheelhouse build dist *.egg-info
	find . -path ./.venv -prune -o -path './.venv-*' -prune -o -path ./.deepcloud -prune -o -path ./.engine -prune \
		-o -name __pycache__ -type d -print0 | xargs -0 rm -rf
