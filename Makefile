# Two commands on a fresh machine: `make demo` (installs, runs the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sparseinst-installed
# The product's Fast DDS transport for camera-size images across processes (see docs/ros.md).
export FASTDDS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds_large_data.xml
# rcl writes its logs below HOME; keep them in the tree when HOME is unset (some CI runners).
export ROS_LOG_DIR ?= $(if $(HOME),$(HOME)/.ros/log,$(CURDIR)/build/ros_log)

.PHONY: install demo demo-offline test bench bench-train bench-node bench-3d bench-cameras bench-gpu bench-bag clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg package.xml scripts/install_ros.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	bash scripts/install_ros.sh $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: install
	$(PY) -m sparseinst_ros.tools.run_demo --output outputs/ros_demo
	$(PY) -m sparseinst_core.tools.demo --output outputs/demo --num-images 3

demo-offline: install
	$(PY) -m sparseinst_core.tools.demo --output outputs/demo

# Two workers (the CI machine's cores), each test file whole in one of them (its module fixtures and test order kept).
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: install
	$(PY) -m sparseinst_core.tools.benchmark --presets r50_giam r18_giam --output-dir outputs/benchmark

bench-train: install
	$(PY) training/benchmark_train.py

bench-node: install
	$(PY) -m sparseinst_ros.tools.benchmark_node --device cpu 2>&1 | tee outputs/benchmark_node.log

# 3D and tracking: the library on generated RGB-D sequences, then the node's pipeline with the demo model on
# every frame and at its own rate on a 30 Hz input (docs/3d_tracking.md).
bench-3d: install
	@mkdir -p outputs
	$(PY) -m sparseinst_core.tools.benchmark_3d --json outputs/benchmark_3d.json 2>&1 | tee outputs/benchmark_3d.log
	$(PY) -m sparseinst_ros.tools.benchmark_node_3d --device cpu --json outputs/benchmark_node_3d.json 2>&1 \
		| tee outputs/benchmark_node_3d.log

bench-cameras: install
	@mkdir -p outputs
	$(PY) -m sparseinst_ros.tools.benchmark_cameras --cameras 4 --device cpu 2>&1 | tee outputs/benchmark_cameras.log

# On a GPU machine, with its own python3 (PyTorch there), not the venv: wheels that scripts/gpu_wheels.sh
# put in .whl/ are installed into /tmp/site first. docs/gpu.md says how; without CUDA it exits 2.
GPU_PYTHON ?= python3
BENCH_GPU_OUTPUT ?= docs
bench-gpu:
	@if ls .whl/*.whl >/dev/null 2>&1; then $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile \
		--no-cache-dir --upgrade --target /tmp/site .whl/*.whl; fi
	PYTHONPATH=/tmp/site$${PYTHONPATH:+:$$PYTHONPATH} PYTHONUNBUFFERED=1 \
		$(GPU_PYTHON) -m sparseinst_core.tools.benchmark_gpu --output-dir $(BENCH_GPU_OUTPUT)

bench-bag: install
	@mkdir -p outputs
	$(PY) -m sparseinst_ros.tools.bag.benchmark --device cpu 2>&1 | tee outputs/benchmark_bag.log

clean:
	rm -rf build outputs .pytest_cache
