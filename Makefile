# The two commands a newcomer needs: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench soak sysdeps clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	# the checkout itself on the venv's path (no build step: firmware/, hal/ and sim/ run from source)
	$(BIN)/python -c 'import sysconfig,pathlib; pathlib.Path(sysconfig.get_paths()["purelib"], "evse-agent.pth").write_text("$(CURDIR)\n")'
	touch $(STAMP)

# System packages the tests need (installed when missing and running as root; named otherwise).
sysdeps:
	@sh scripts/ensure-system-packages.sh

run: $(STAMP)
	$(BIN)/python -m sim up $(ARGS)

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The long runs: the power-cut loop (kill -9 the agent SOAK_CUTS times at random moments of sessions, ~1.2 s a
# cut, then check every transaction on the CSMS side; POWERCUT_SEED=N replays one run), then the fuzzers at
# length (SOAK_FUZZ OCPP frames, MQTT commands and examples per hardware decoder; FUZZ_SEED=N replays).
SOAK_CUTS ?= 500
SOAK_FUZZ ?= 2000
SOAK_TESTS ?= tests/test_e2e_powercut.py tests/test_e2e_powercut_ocpp201.py tests/test_e2e_fuzz_ocpp.py tests/test_e2e_fuzz_mqtt.py tests/test_fuzz_hal.py
soak: $(STAMP) sysdeps
	POWERCUT_CUTS=$(SOAK_CUTS) FUZZ_EXAMPLES=$(SOAK_FUZZ) $(BIN)/python -m pytest $(SOAK_TESTS) -s \
		-o timeout=3600 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
