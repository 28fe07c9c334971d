# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN ?= runs/demo
PHANTOM ?= data/phantom
DEMO_PAIRS ?= 1000
DEMO_SIZE ?= 320 256
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline

.PHONY: venv test test-slow test-cluster lint demo x1 bench clean

venv: $(STAMP)

# torch and torchvision first, pinned, so that no resolver picks another (multi-GB) build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# ruff's lint and format check first (`make lint`), then every test not marked slow or cluster.
test: $(STAMP) lint
	$(PY) -m pytest -m "not slow and not cluster" -q --durations=15

# A real single-machine SLURM (installs Debian's slurm-wlm and munge when missing; needs root):
# the emitted pipeline submitted as chained jobs, one stage a two-task DDP job through srun.
test-cluster: $(STAMP)
	PYTHON=$(PY) bash tests/cluster/run.sh

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not cluster" -q

# The CPU benchmarks (about 10 minutes here), each writing bench/results/*.json; the demo's stage
# times and detections above the FAUC cuts are recorded when $(RUN) holds a finished demo;
# bench_scale also writes README's "At the paper's scale" table; the GPU benchmark runs where
# CUDA is.
bench: $(STAMP)
	$(PY) bench/bench_eval.py
	if [ -f $(RUN)/pipeline.json ]; then $(PY) bench/bench_scale.py --demo-run $(RUN); \
	else $(PY) bench/bench_scale.py; fi
	$(PY) bench/bench_data.py
	$(PY) bench/bench_train.py
	if [ -f $(RUN)/pipeline.json ]; then $(PY) bench/bench_demo.py --run $(RUN); \
	else echo "bench_demo: no finished demo in $(RUN) (make demo first); skipped"; fi
	$(PY) bench/bench_gpu.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The main job on the built-in phantom: the whole experiment (Stage I SM and FFDM, Stage II,
# Stage III, BASE_UB and a control) as one pipeline, then the report; a rerun skips what is done.
demo: $(STAMP) $(PHANTOM)/cache/.complete
	$(PY) cli.py pipeline --config configs/pipeline/phantom.yaml --run $(RUN)

# README's "Does Stage II carry the FFDM's knowledge?" on the phantom (several hours on 2 CPU
# cores): the Stage II loss kinds on seed 0 (chosen on validation; probes; Model_SM on 4x the
# pairs), then Eq. 2 and the chosen kind over three training seeds with their controls; writes
# runs/x1/grid/seeds_report.md, runs/x1/seeds_report.md and runs/x1/masked/seeds_report.md.
# Stages shared with a finished run are skipped.
x1: $(STAMP) $(PHANTOM)/cache/.complete data/phantom_4x/cache/.complete
	$(PY) cli.py pipeline --config configs/pipeline/phantom_x1_grid.yaml
	$(PY) cli.py pipeline --config configs/pipeline/phantom_x1.yaml
	$(PY) cli.py pipeline --config configs/pipeline/phantom_x1_masked.yaml

$(PHANTOM)/manifest.csv: | $(STAMP)
	$(PY) cli.py phantom --out $(PHANTOM) --pairs $(DEMO_PAIRS) --seed 0

$(PHANTOM)/cache/.complete: $(PHANTOM)/manifest.csv
	$(PY) cli.py prepare --manifest $(PHANTOM) --out $(PHANTOM)/cache --image-size $(DEMO_SIZE)
	touch $@

# X1's Model_SM on 4x the pairs: the phantom's validation and test pairs, and 4x its training
# pairs from the same generator with another seed (configs/data/phantom_4x.yaml).
data/phantom_seed1/manifest.csv: | $(STAMP)
	$(PY) cli.py phantom --out data/phantom_seed1 --pairs 4000 --seed 1

data/phantom_4x/cache/.complete: $(PHANTOM)/manifest.csv data/phantom_seed1/manifest.csv
	$(PY) -m analysis.more_pairs --base $(PHANTOM) --extra data/phantom_seed1 --factor 4 \
		--out data/phantom_4x
	$(PY) cli.py prepare --manifest data/phantom_4x --out data/phantom_4x/cache --image-size $(DEMO_SIZE)
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
