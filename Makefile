# kplate: every target is one step of the pipeline. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEB_PACKAGES := fonts-nanum fonts-unfonts-core fonts-baekmuk mate-backgrounds

MODEL_NAME ?= kplate
SEED ?= 0
COUNT ?= 24
OUT ?= data/preview

.PHONY: help install deb lint test checks preview train train-cpu train-detector train-reader train-crop-reader eval tune corner-error bench-engine bench-train bench-render clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

deb: ## install the Debian packages (Korean fonts, background photos) if missing
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi; \
	  echo "installing Debian packages: $$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# A new .venv takes about 7 GB of disk: the pinned torch 2.14.1 is a CUDA build and brings its
# CUDA libraries (3.2 GB) and triton (0.9 GB) with it. A fresh install peaked at 7.05 GB and
# left 6.7 GB (2026-12-06), so a new .venv asks for 7.2 GB free first.
VENV_NEEDS_MB := 7200

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory deb
	@if [ ! -d $(VENV) ]; then \
	  dir=$$(dirname $(VENV)) && mkdir -p "$$dir" && \
	  free=$$(df -Pm "$$dir" | awk 'NR == 2 {print $$4}') && [ -n "$$free" ] || exit 1; \
	  if [ "$$free" -lt $(VENV_NEEDS_MB) ]; then \
	    echo "make install: a new $(VENV) needs about $(VENV_NEEDS_MB) MB of free disk, $$free MB free here" >&2; exit 1; \
	  fi; \
	  echo "$(PYTHON) -m venv $(VENV)" && $(PYTHON) -m venv $(VENV); \
	fi
	$(PIP) install -q -e '.[synth,train,serve,deploy,dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with the project, its dev tools and the Debian packages it needs

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy kplate handler request gs tests scripts

test: $(STAMP) jre ## run the test suite (TorchServe's tests need Java: installed if missing)
	$(VENV)/bin/pytest -q

checks: lint test ## everything CI checks

preview: $(STAMP) ## render a few synthetic scenes and a contact sheet (data/preview/sheet.png)
	$(VENV)/bin/kplate synth --out $(OUT) --count $(COUNT) --seed $(SEED) --kind scenes --preview $(OUT)/sheet.png

# --- engine (issue 3) ---
RUNS ?= runs
REAL_DEV ?= ../shared/real-dev
WEIGHTS := kplate/weights

# The shipped weights come from exactly these three commands: `time make train` in a fresh
# clone wrote them byte for byte in 93.7 min on 2026-12-06 on a 2-core machine (detector done
# at 55.0 min, reader at 77.2, crop reader at 93.7); the same steps' time varies by 15%
# between sessions (kplate/weights/MODEL_CARD.md, docs/model-history.md).
train: $(STAMP) ## train detector and reader side by side, then the crop reader from that reader; ship the weights
	$(MAKE) --no-print-directory -j2 train-detector train-reader
	$(MAKE) --no-print-directory train-crop-reader
	cp $(RUNS)/detector/model.pt $(WEIGHTS)/detector.pt
	cp $(RUNS)/reader/model.pt $(WEIGHTS)/reader.pt
	cp $(RUNS)/crop-reader/model.pt $(WEIGHTS)/crop_reader.pt
	@ls -l $(WEIGHTS)/*.pt

# Side by side, the two runs share 2 cores. OpenMP threads that sleep while they wait, instead
# of spinning, make a step 29-33% shorter than with the variable unset, as before (`make
# bench-train`, 2026-12-05; ACTIVE is no better than unset). glibc's malloc otherwise hands
# each step's large blocks back to the kernel and faults in fresh pages the next step (8% of
# make train's CPU time was the kernel's on 2026-12-06); the MALLOC_ variables keep freed
# memory for reuse. `make bench-train`, 2026-12-06: a step took 0.75x (detector) and 0.92x
# (reader) of a PASSIVE-only one, side by side; over 20 steps alone, kernel time 1.67 -> 0.04 s
# (detector) and 0.58 -> 0.11 s (reader), peak memory +3-5%, parameters bit for bit the same.
# A full make train with them, 2026-12-06: 93.7 min (was 100.4), the shipped weights byte for byte.
TRAIN_ENV := OMP_WAIT_POLICY=PASSIVE MALLOC_MMAP_THRESHOLD_=4294967295 MALLOC_TRIM_THRESHOLD_=17179869184

# PORTABLE=1 trains so that every x86-64 CPU with AVX2 and FMA computes the same bits: PyTorch's
# and oneDNN's kernels held to AVX2 (no AVX-512 paths), MKL on its compatible code path, numpy
# without AVX-512 loops, and the optimiser's square root correctly rounded (--optimizer exact).
# An emulated Intel Haswell (QEMU) and this AMD EPYC wrote the same bytes with it; the shipped
# weights do not come from it (docs/model-history.md, 2026-12-07, candidates PT and PT2).
PORTABLE ?=
PORTABLE_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=COMPATIBLE NPY_DISABLE_CPU_FEATURES=X86_V4,AVX512_ICL,AVX512_SPR
RUN_TRAIN = $(TRAIN_ENV) $(if $(PORTABLE),$(PORTABLE_ENV)) $(VENV)/bin/kplate train
PORTABLE_ARGS := $(if $(PORTABLE),--optimizer exact)

# PyTorch held to AVX2 kernels stops with "illegal instruction" on a CPU without AVX2: refuse
# first, with the reason.
train-cpu:
	@if [ -n "$(PORTABLE)" ]; then [ "$$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo || { \
		echo "make train PORTABLE=1 needs an x86-64 CPU with AVX2 and FMA" >&2; exit 1; }; fi

# EMA="0.99 0.999" also keeps moving averages of each model's weights with these decays
# (runs/*/model-ema<DECAY>.pt, validated at the last step); the trained weights, the ones
# make train ships, are the same bytes with or without them.
EMA ?=
EMA_ARGS := $(if $(strip $(EMA)),--ema $(EMA))

train-detector: $(STAMP) train-cpu ## train the plate detector into runs/detector
	$(RUN_TRAIN) detector --out $(RUNS)/detector --force --threads 1 --workers 1 $(EMA_ARGS) $(PORTABLE_ARGS)

train-reader: $(STAMP) train-cpu ## train the plate reader into runs/reader
	$(RUN_TRAIN) reader --out $(RUNS)/reader --force --threads 2 --workers 2 $(EMA_ARGS) $(PORTABLE_ARGS)

# The crop reader starts from a trained reader: by default the one train-reader wrote
# (READER_INIT=kplate/weights/reader.pt starts from the shipped one).
READER_INIT ?= $(RUNS)/reader/model.pt

train-crop-reader: $(STAMP) train-cpu ## fine-tune the reader on loose and rectified crops into runs/crop-reader
	$(RUN_TRAIN) crop-reader --init $(READER_INIT) --out $(RUNS)/crop-reader --force --threads 2 --workers 2 $(EMA_ARGS) $(PORTABLE_ARGS)

# held-out synthetic sets: seeds the training never uses; re-rendered when the generator changes
SYNTH_SRC := $(wildcard kplate/synth/*.py)

data/heldout-scenes/labels.jsonl: $(SYNTH_SRC) | $(STAMP)
	rm -rf data/heldout-scenes
	$(VENV)/bin/kplate synth --out data/heldout-scenes --kind scenes --count 300 --seed 777

data/heldout-crops/labels.jsonl: $(SYNTH_SRC) | $(STAMP)
	rm -rf data/heldout-crops
	$(VENV)/bin/kplate synth --out data/heldout-crops --kind crops --count 2000 --seed 778

data/heldout-loose-crops/labels.jsonl: $(SYNTH_SRC) | $(STAMP)
	rm -rf data/heldout-loose-crops
	$(VENV)/bin/kplate synth --out data/heldout-loose-crops --kind loose-crops --count 2000 --seed 783

HELDOUT := data/heldout-scenes/labels.jsonl data/heldout-crops/labels.jsonl data/heldout-loose-crops/labels.jsonl

eval: $(HELDOUT) | $(STAMP) ## accuracy on held-out synthetic data and, when present, the real-dev photos
	$(VENV)/bin/kplate eval data/heldout-scenes --out runs/eval/heldout-scenes
	$(VENV)/bin/kplate eval data/heldout-crops --out runs/eval/heldout-crops
	$(VENV)/bin/kplate eval data/heldout-loose-crops --out runs/eval/heldout-loose-crops
	if [ -f $(REAL_DEV)/labels.jsonl ]; then $(VENV)/bin/kplate eval $(REAL_DEV) --out runs/eval/real-dev; \
	else echo "no $(REAL_DEV): skipping the real photos"; fi

tune: data/heldout-scenes/labels.jsonl | $(STAMP) ## sweep the detection threshold and reading repair on held-out synthetic scenes
	$(PY) scripts/tune_inference.py data/heldout-scenes --json runs/tune.json

corner-error: data/heldout-scenes/labels.jsonl | $(STAMP) ## the detector's corner error on held-out synthetic scenes, next to the reader's training jitter
	$(PY) scripts/corner_error.py data/heldout-scenes --json runs/corner-error.json

bench-engine: $(STAMP) ## engine latency (1920x1080, one plate) and throughput, as ratios to a baseline
	$(PY) scripts/bench_engine.py --json runs/bench-engine.json

bench-train: $(STAMP) ## training steps side by side under each OpenMP wait policy and malloc setting, as ratios
	$(PY) scripts/bench_train_threads.py --json runs/bench-train.json

bench-render: $(STAMP) ## the generator's CPU time per sample against a git ref (AGAINST=HEAD), and whether the bytes are the same
	$(PY) scripts/bench_render.py --against $(or $(AGAINST),HEAD) --json runs/bench-render.json

# --- serving (issue 4) ---
# The .mar is rebuilt when the handler, the engine source, its configs or its weights change.
MAR := gs/model-store/$(MODEL_NAME).mar
TS_CONFIG ?= gs/config/config.properties
SERVE_DIR ?= .serve
JRE_PACKAGE ?= openjdk-17-jre-headless
MAR_SOURCES := $(wildcard handler/*.py handler/model-config.yaml handler/requirements.txt \
	kplate/*.py kplate/*/*.py kplate/configs/*.yaml kplate/weights/*.pt)

.PHONY: mar jre serve stop serve-status bench-serve check-serving-torch

$(MAR): $(STAMP) $(MAR_SOURCES)
	$(PY) -m handler.archive --export-path $(dir $(MAR)) --model-name $(MODEL_NAME)

mar: $(MAR) ## build gs/model-store/kplate.mar (handler, kplate source and weights, model-config.yaml)

jre: ## install a Java runtime for TorchServe if java is missing
	@command -v java >/dev/null 2>&1 || [ -x "$$JAVA_HOME/bin/java" ] || { \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi; \
	  echo "installing $(JRE_PACKAGE)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(JRE_PACKAGE) >/dev/null; \
	}

serve: $(STAMP) jre $(MAR) ## start TorchServe (:8085) and the KServe front (:8080) in the background
	$(PY) -m handler.local_serving start --config $(TS_CONFIG) --model-store $(dir $(MAR)) --state-dir $(SERVE_DIR)

stop: ## stop TorchServe and the KServe front started by `make serve`
	@if [ -x $(PY) ]; then $(PY) -m handler.local_serving stop --state-dir $(SERVE_DIR); else echo "nothing to stop"; fi

serve-status: $(STAMP) ## one line per server (pid, URLs); exit status 1 unless both run
	@$(PY) -m handler.local_serving status --config $(TS_CONFIG) --state-dir $(SERVE_DIR)

bench-serve: $(STAMP) jre $(MAR) ## served vs in-process throughput and p50/p95 at concurrency 1, 4, 8
	$(PY) scripts/bench_serve.py --mar $(MAR) --config $(TS_CONFIG)

# The predictor image (docker/Dockerfile) keeps its base's torch 2.4.0: run the shipped weights
# and the handler under that torch, not only inspect them. A venv of its own, with the image's
# torch and torchvision, its pinned engine dependencies (docker/requirements.txt) and
# TorchServe: 5.3 GB in .venv-serving, from PyPI the first time (a CUDA build; runs on a CPU).
SERVING_VENV ?= .venv-serving
SERVING_TORCH := torch==2.4.0 torchvision==0.19.0
SERVING_TOOLS := torchserve==0.12.0 torch-model-archiver==0.12.0 requests httpx orjson

check-serving-torch: jre ## the engine and TorchServe under the serving image's torch 2.4.0, in .venv-serving (5.3 GB, installed once)
	@test -x $(SERVING_VENV)/bin/python || $(PYTHON) -m venv $(SERVING_VENV)
	$(SERVING_VENV)/bin/pip install -q $(SERVING_TORCH) $(SERVING_TOOLS) -r docker/requirements.txt
	$(SERVING_VENV)/bin/python scripts/check_serving_torch.py

# --- deploy (issue 5) ---
# Names, namespace, bucket and image live in k8s/base/params.env, the one place the manifests
# read; these defaults read it too, so `make upload` writes what `make deploy` serves.
K8S_PARAMS := k8s/base/params.env
k8s_param = $(strip $(shell sed -n 's/^$(1)=//p' $(K8S_PARAMS) 2>/dev/null))
require = $(if $(strip $($(1))),,$(error $(1) is not set: $(2)))
BUCKET ?= $(call k8s_param,bucket)
PREFIX ?= $(call k8s_param,prefix)
NAMESPACE ?= $(call k8s_param,namespace)
ISVC ?= $(call k8s_param,name)
IMAGE ?= $(call k8s_param,image)
OVERLAY ?= gpu
PROTOCOL ?= v1
LOCAL_PORT ?= 8080
PREDICTOR_PORT := 8080
IMG ?= $(firstword $(wildcard request/samples/*.jpg request/samples/*.png))
KEY ?=
KUBECTL ?= $(shell command -v kubectl 2>/dev/null || echo $(VENV)/bin/kubectl)
GCS_KEY_SECRET := kplate-gcs-key

.PHONY: upload gcs-emulator deploy undeploy port-forward request image image-push gcs-secret kube-context

# kubectl without a current context falls back to localhost:8080, where `make serve` may be
# answering, and its errors then speak of openapi downloads or memcache: say what is missing.
kube-context:
	@command -v $(KUBECTL) >/dev/null || { echo "error: kubectl not found: install it or run make install" >&2; exit 1; }
	@$(KUBECTL) config current-context >/dev/null 2>&1 || { echo "error: kubectl has no current context, so no cluster to talk to: point KUBECONFIG at one (GKE: gcloud container clusters get-credentials CLUSTER --location LOCATION)" >&2; exit 1; }

# Depends on the .mar itself: an archive older than the handler, the engine source, its
# configs or the weights (MAR_SOURCES) is rebuilt before anything is uploaded. The upload
# refuses to replace an object with other bytes (publish under a new PREFIX) unless
# OVERWRITE=1, and records where it went in LAST_UPLOAD, which `make deploy` checks.
OVERWRITE ?=
LAST_UPLOAD ?= gs/.last-upload
upload: $(STAMP) $(MAR) ## build the .mar if stale, then upload gs/config + gs/model-store to gs://BUCKET/PREFIX (default: k8s/base/params.env)
	$(call require,BUCKET,pass BUCKET=my-bucket or set bucket= in $(K8S_PARAMS))
	$(call require,PREFIX,pass PREFIX=kplate/v1 or set prefix= in $(K8S_PARAMS))
	$(PY) gs/upload.py --bucket $(BUCKET) --prefix $(PREFIX)$(if $(strip $(OVERWRITE)), --overwrite) --record $(LAST_UPLOAD)

# Try make upload without a cloud project: an emulator on loopback with the bucket, then in
# another shell the command it prints (LAST_UPLOAD elsewhere, so make deploy never takes an
# emulator upload for a real one).
EMULATOR_PORT ?= 4443
gcs-emulator: $(STAMP) ## a local GCS emulator with BUCKET on EMULATOR_PORT (4443), to try make upload (Ctrl-C stops it)
	$(call require,BUCKET,pass BUCKET=my-bucket or set bucket= in $(K8S_PARAMS))
	$(PY) gs/emulator.py --bucket $(BUCKET) --port $(EMULATOR_PORT)

deploy: kube-context ## kubectl apply -k k8s/overlays/$(OVERLAY) (OVERLAY=gpu|cpu)
	$(call require,NAMESPACE,set namespace= in $(K8S_PARAMS))
	$(if $(wildcard k8s/overlays/$(OVERLAY)/kustomization.yaml),,$(error unknown OVERLAY=$(OVERLAY): use gpu or cpu))
	@if [ "$(BUCKET)/$(PREFIX)" != "$(call k8s_param,bucket)/$(call k8s_param,prefix)" ]; then \
	  echo "error: BUCKET/PREFIX=$(BUCKET)/$(PREFIX) but the manifests read gs://$(call k8s_param,bucket)/$(call k8s_param,prefix): edit bucket= and prefix= in $(K8S_PARAMS)" >&2; exit 1; fi
	@want=$(PREFIX); want=gs://$(BUCKET)/$${want#/}; want=$${want%/}; last=$$(cat $(LAST_UPLOAD) 2>/dev/null); \
	if [ -z "$$last" ]; then echo "note: no make upload recorded in $(LAST_UPLOAD): deploying $$want, as $(K8S_PARAMS) names it"; \
	elif [ "$$last" != "$$want" ]; then \
	  b=$${last#gs://}; b=$${b%%/*}; echo "error: the last make upload wrote $$last but the manifests read $$want: to serve that upload set bucket=$$b and prefix=$${last#gs://*/} in $(K8S_PARAMS); to deploy $$want anyway (a rollback), delete $(LAST_UPLOAD) first" >&2; exit 1; fi
	$(KUBECTL) apply -k k8s/overlays/$(OVERLAY)
	@echo "next: $(KUBECTL) get inferenceservice $(ISVC) -n $(NAMESPACE) -w   (READY=True once the model is loaded)"

undeploy: kube-context ## kubectl delete -k k8s/overlays/$(OVERLAY) (the InferenceService, its ServiceAccount and namespace)
	$(KUBECTL) delete -k k8s/overlays/$(OVERLAY) --ignore-not-found

port-forward: kube-context ## forward localhost:LOCAL_PORT (8080) to the predictor pod's 8080 (KServe front)
	$(call require,NAMESPACE,set namespace= in $(K8S_PARAMS))
	$(call require,ISVC,set name= in $(K8S_PARAMS))
	@python3 -c "import socket as s; p = s.socket(); p.setsockopt(s.SOL_SOCKET, s.SO_REUSEADDR, 1); p.bind(('127.0.0.1', $(LOCAL_PORT)))" 2>/dev/null || { \
	  echo "error: localhost:$(LOCAL_PORT) is in use (make serve? run make stop first, or pass LOCAL_PORT=18080 here and to make request)" >&2; exit 1; }
	@pod=$$($(KUBECTL) get pod -n $(NAMESPACE) -l serving.kserve.io/inferenceservice=$(ISVC),component=predictor \
	  --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}'); \
	if [ -z "$$pod" ]; then echo "error: no running predictor pod of $(ISVC) in namespace $(NAMESPACE): check $(KUBECTL) get inferenceservice,pods -n $(NAMESPACE)" >&2; exit 1; fi; \
	echo "forwarding localhost:$(LOCAL_PORT) -> $$pod:$(PREDICTOR_PORT) (Ctrl-C to stop)"; \
	$(KUBECTL) port-forward -n $(NAMESPACE) pod/$$pod $(LOCAL_PORT):$(PREDICTOR_PORT)

request: $(STAMP) ## send IMG to the forwarded predictor (run make port-forward in another shell)
	$(call require,IMG,pass IMG=path/to/photo.jpg)
	@test -f "$(IMG)" || { echo "error: IMG=$(IMG) does not exist" >&2; exit 1; }
	$(PY) request/request.py $(IMG) --kserve --url http://localhost:$(LOCAL_PORT) --model-name $(MODEL_NAME) --protocol $(PROTOCOL)

image: ## docker build the predictor image (docker/Dockerfile) as IMAGE (default: k8s/base/params.env)
	$(call require,IMAGE,pass IMAGE=registry/kplate-serving:tag or set image= in $(K8S_PARAMS))
	@command -v docker >/dev/null || { echo "error: docker not found" >&2; exit 1; }
	DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile -t $(IMAGE) .

image-push: ## docker push IMAGE (the registry the cluster pulls from)
	$(call require,IMAGE,pass IMAGE=registry/kplate-serving:tag or set image= in $(K8S_PARAMS))
	docker push $(IMAGE)

gcs-secret: kube-context ## store a GCS key for KServe (KEY=/path/key.json; not needed with Workload Identity)
	$(call require,KEY,pass KEY=/path/to/service-account-key.json (kept outside the repository))
	@test -f "$(KEY)" || { echo "error: KEY=$(KEY) does not exist" >&2; exit 1; }
	$(KUBECTL) create namespace $(NAMESPACE) --dry-run=client -o yaml | $(KUBECTL) apply -f -
	@$(KUBECTL) create secret generic $(GCS_KEY_SECRET) -n $(NAMESPACE) \
	  --from-file=gcloud-application-credentials.json="$(KEY)" --dry-run=client -o yaml | $(KUBECTL) apply -f -
	@echo "now enable components/gcs-key in k8s/overlays/$(OVERLAY)/kustomization.yaml and run make deploy"


clean: ## remove generated data and build outputs (keeps .venv and the shipped weights)
	rm -rf data runs build .pytest_cache .mypy_cache .ruff_cache gs/model-store/*.mar
