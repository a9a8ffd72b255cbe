# The two commands of the README.
.PHONY: demo test
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh

# Packaging and the edge (README, "Install"): not part of `make test` (minutes each).
.PHONY: wheel wheel-test sizes cross-arm64
wheel:  # dist/xpuruntime-*-manylinux_*.whl, libraries carried (auditwheel)
	bash scripts/wheel.sh
wheel-test:  # installs that wheel in a fresh venv without the build packages in reach; compiles and runs a model
	bash scripts/wheel_test.sh
sizes:  # installed size of the core and of each extra, by distribution
	.venv/bin/python bench/install_sizes.py
cross-arm64:  # libxrt, the OpenVINO plugin and xrt-run for aarch64; a bundle run under qemu-aarch64
	bash scripts/cross_arm64.sh
