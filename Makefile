# MedPortal — the two commands a new machine needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# pytest-xdist workers; 2 cores here.
TEST_WORKERS ?= 2

.PHONY: install demo test test-fast e2e-deps bench messages clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# The CPU path pins torch==2.13.0 (see constraints-cpu.txt) so nothing pulls a CUDA build.
$(STAMP): $(PY) pyproject.toml constraints-cpu.txt
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints-cpu.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	DEBUG=1 $(PY) manage.py migrate --noinput
	DEBUG=1 $(PY) manage.py setup_demo
	DEBUG=1 $(PY) manage.py rundemo --host $(HOST) --port $(PORT)

# Browser tests need Debian's chromium; install it when missing and we are root.
e2e-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei >/dev/null) || echo "chromium not installed: browser tests will be skipped"; }

test: install e2e-deps
	$(PY) -m pytest -n $(TEST_WORKERS) -p no:cacheprovider $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not e2e" -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(PY) bench/import_speed.py
	$(PY) bench/list_latency.py

messages: install
	cd $(CURDIR) && $(PY) manage.py makemessages -l zh_Hans --ignore '.venv/*' --ignore 'var/*' --ignore 'tests/*' --ignore 'bench/*' && $(PY) manage.py compilemessages -l zh_Hans --ignore '.venv/*'

clean:
	rm -rf $(VENV) var .pytest_cache
