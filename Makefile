# The two commands: `make test` and `make demo`. Each creates or updates .venv first and
# reinstalls nothing when nothing changed (stamp files under .venv/).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD := build
ARGS ?=
PYTEST_ARGS ?=

# Every rclpy process this Makefile starts stays on this host (ROS_LOCALHOST_ONLY is ignored
# by this ROS version). The test suite picks its own domain id per session (test/conftest.py).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
# A guard inherited from another venv's bootstrapper would skip ours and lose LD_LIBRARY_PATH.
unexport _ROS_WHEELS_BOOTSTRAP_COMPLETE
export SDL_VIDEODRIVER := offscreen

PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check -q -c requirements/constraints.txt
DOCKERFILES := $(wildcard docker/Dockerfile*)
INTERFACE_FILES := $(shell find interfaces -type f -not -name '*~')

.PHONY: venv test lint pytest demo lock clean

venv: $(VENV)/.stamp-ament

$(VENV)/.stamp-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "av_td3_ros needs Python >= 3.10, found " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	touch $@

$(VENV)/.stamp-deps: $(VENV)/.stamp-python requirements/constraints.txt requirements/ros-wheels.txt \
  requirements/python.txt requirements/carla.txt requirements/dev.txt
	$(PIP_INSTALL) -r requirements/ros-wheels.txt -r requirements/python.txt -r requirements/carla.txt \
	  -r requirements/dev.txt \
	  2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	$(PY) tools/fix_ros_cmake_paths.py $(VENV)
	touch $@

$(VENV)/.stamp-interfaces: $(VENV)/.stamp-deps tools/build_interfaces.sh $(INTERFACE_FILES)
	tools/build_interfaces.sh $(VENV) $(BUILD)/interfaces
	touch $@

$(VENV)/.stamp-package: $(VENV)/.stamp-interfaces setup.py setup.cfg package.xml
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $@

# The colcon layout of an ament_python package (ament index marker, share/av_td3_ros, executables
# under lib/av_td3_ros), so `ros2 launch av_td3_ros ...` works from the venv after
# `source .venv/setup.sh`. Links, so edits need no reinstall; a new launch or config file does.
$(VENV)/.stamp-ament: $(VENV)/.stamp-package tools/install_ament_layout.py \
  $(wildcard launch/*.launch.py config/* resource/*)
	$(PY) tools/install_ament_layout.py $(VENV)
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(if $(DOCKERFILES),$(VENV)/bin/hadolint $(DOCKERFILES),@echo 'lint: no Dockerfile under docker/')

pytest: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint pytest

demo: venv
	$(VENV)/bin/av-td3 demo $(ARGS)

# Re-freeze constraints.txt from the current venv (after changing a requirements/*.txt). The
# merge keeps the hand-checked Python 3.10 pins of the Docker image (tools/lock_constraints.py).
lock: venv
	$(PY) -m pip freeze --exclude-editable | sed 's/+cpu$$//' \
	  | $(PY) tools/lock_constraints.py requirements/constraints.txt > requirements/constraints.txt.new
	mv requirements/constraints.txt.new requirements/constraints.txt

clean:
	rm -rf $(BUILD) $(VENV)
