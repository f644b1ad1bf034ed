# Set-up and checks. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/*)
FMNIST := /usr/share/datasets/fashion-mnist
# The demo: a LeNet-5 teacher on real Fashion-MNIST, then a data-free student.
DEMO_TEACHER_EPOCHS ?= 12
DEMO_PRESET ?= fashion-mnist
# auto times float32 against bf16 autocast on the run's own steps and keeps bf16 only where it is
# at least 10 % faster: on some CPUs that list AVX-512 BF16 it is still slower.
DEMO_PRECISION ?= auto
# LeNet-sized models gain nothing from a second OpenMP thread, and on a busy 2-core machine the
# threads spin against each other (10-20x slower); see docs/architecture.md. Override freely.
export OMP_NUM_THREADS ?= 1

.PHONY: install test test-latest lock lint format demo bench bench-scratch bench-help

# The exact versions the suite passed with (a pip constraints file; dfkd/lockfile.py). Every
# install goes through it and is then checked against it; `make lock` is the only way it changes.
LOCK := requirements.lock
EDITABLES := -e '.[dev]' $(foreach p,$(PLUGINS),-e $(p))

$(BIN)/dfkd: pyproject.toml $(wildcard plugins/*/pyproject.toml) $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) $(EDITABLES)
	$(BIN)/python -m dfkd.lockfile check $(LOCK)
	touch $(BIN)/dfkd

install: $(BIN)/dfkd fashion-mnist

# Debian's dataset package holds the real Fashion-MNIST; installed when we are root and it is missing.
.PHONY: fashion-mnist
fashion-mnist:
	@if [ ! -f $(FMNIST)/t10k-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; fi

# Exit code 5 means "no tests were collected": treat an empty selection as a pass.
test: install
	DFKD_STRICT_PLUGINS=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

lint: $(BIN)/dfkd
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/dfkd
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The demo, as a user without the data would go: the teacher's owner trains LeNet-5-BN on
# Fashion-MNIST; the distillation sees only the teacher's weights file (no dataset named) and
# runs NAYER, the fastest method on this pair; the exported student is scored on the real test
# split at the end.
DEMO_TEACHER := checkpoints/fashion-mnist-lenet5_bn.safetensors
demo: install
	@test -f $(DEMO_TEACHER) || $(BIN)/dfkd scratch --model lenet5_bn --dataset fashion-mnist \
		--epochs $(DEMO_TEACHER_EPOCHS) --lr 0.05 --batch-size 128 --out runs/demo-teacher --overwrite
	$(BIN)/dfkd run nayer --teacher lenet5_bn --teacher-weights $(DEMO_TEACHER) \
		--student lenet5_half --preset $(DEMO_PRESET) --mixed-precision $(DEMO_PRECISION) \
		--out runs/demo-nayer --overwrite
	$(BIN)/dfkd export runs/demo-nayer --format onnx --overwrite
	$(BIN)/dfkd eval --weights runs/demo-nayer/student.onnx --dataset fashion-mnist

# The suite against the newest versions the registry offers, in a venv of its own, after a list
# of what moved from the lock: dependency drift seen here before users meet it.
LATEST_VENV := .venv-latest
test-latest: fashion-mnist
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade $(EDITABLES)
	$(LATEST_VENV)/bin/python -m dfkd.lockfile moved $(LOCK)
	DFKD_STRICT_PLUGINS=1 $(LATEST_VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# Re-resolve, run the suite, and only when it passes make those versions the lock.
lock: test-latest
	$(LATEST_VENV)/bin/python -m dfkd.lockfile write $(LOCK)

bench-scratch: install
	$(BIN)/python benchmarks/scratch_fmnist.py

bench-help: install
	$(BIN)/python benchmarks/cli_startup.py

bench: bench-help bench-scratch
