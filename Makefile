# The two commands (README): `make run` starts ComfyUI with the pack; `make test` runs the whole suite.
# Both do any missing set-up first (scripts/setup.sh is idempotent and quick when nothing changed).
PY := .venv/bin/python
COMFY := $(if $(COMFYUI_PATH),$(COMFYUI_PATH),.comfyui/ComfyUI)
HOST ?= 127.0.0.1
PORT ?= 8188

.PHONY: setup run test bench

setup:
	@bash scripts/setup.sh

run: setup
	@$(PY) scripts/model_folders.py "$(COMFY)" --host "$(HOST)" --port "$(PORT)"
	cd "$(COMFY)" && "$(CURDIR)/$(PY)" main.py --listen $(HOST) --port $(PORT) --disable-auto-launch \
		$$("$(CURDIR)/$(PY)" -c "import torch; print('' if torch.cuda.is_available() else '--cpu')")

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest $(if $(PYTEST_ARGS),$(PYTEST_ARGS),tests)

bench: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_mca.py $(BENCH_ARGS)
