# Two commands do everything on a fresh machine:
#   make demo   set up .venv and train the default model on the embedded synthetic data
#   make test   set up .venv and run the whole test suite
PY      := python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench clean ui serve server

setup: $(STAMP)

# torch first, by exact version: 2.13.0 is the CPU build on these machines; letting pip pick
# torch through another package would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev,spark,ray]"
	# Without its dependencies: its metadata still pins optuna<3, which would replace optuna 5
	# (pinned in pyproject); the sweeper's calls work on optuna 5 (tests/test_sweeps.py).
	$(BIN)/python -m pip install -q --no-deps hydra-optuna-sweeper==1.3.0
	# The same for hydra/launcher=ray: its metadata asks for cloudpickle<3 (mlflow has 3) and
	# boto3, which only its AWS launcher imports; the local launcher runs on ray 2.60 (tests).
	$(BIN)/python -m pip install -q --no-deps hydra-ray-launcher==1.2.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/phat train model=logistic horizon=15m

# Two workers (2 cores); a test file stays on one worker, so its module fixtures are built once.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The inner loop: the suite without the tests marked slow (end-to-end trainings, servers).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python scripts/bench_pipeline.py
	$(BIN)/python scripts/bench_backtest.py
	$(BIN)/python scripts/bench_inference.py
	$(BIN)/python scripts/bench_train.py

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

# A shared tracking server: MLflow on PostgreSQL, artifacts proxied, users required
# (docs/scale.md). SERVER_ALLOW: the names, addresses and networks other machines use or come
# from; the admin's password from PHAT_SERVER_ADMIN_PASSWORD, else generated under SERVER_DIR.
#   make server SERVER_DIR=~/phat-server SERVER_HOST=10.0.0.5 SERVER_ALLOW=mlflow.example.internal,10.0.0.0/8
SERVER_DIR   ?= phat-server
SERVER_PORT  ?= 5000
PG_PORT      ?= 5432
SERVER_HOST  ?= 127.0.0.1
SERVER_ALLOW ?=
server: $(STAMP)
	$(BIN)/python scripts/mlflow_server.py --dir $(SERVER_DIR) --port $(SERVER_PORT) \
	  --pg-port $(PG_PORT) --host $(SERVER_HOST) --allow "$(SERVER_ALLOW)"

# REST scoring of a registered model, verified first (phat serve; docs/mlflow.md):
#   make serve                       (the newest version of the demo model)
#   make serve MODEL=models:/phat-synth-15m@production PORT=5001
MODEL ?= models:/phat-synth-15m/latest
PORT  ?= 5001
serve: $(STAMP)
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} \
	  $(BIN)/phat serve model_uri="$(MODEL)" port=$(PORT)

clean:
	rm -rf outputs multirun mlruns mlflow.db .phat-locks .pytest_cache
