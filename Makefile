# Mediasite. `make run` and `make test` work on a fresh machine: they create .venv and install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT

.PHONY: run test test-interop lint install install-dev migrate worker beat bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py collectstatic --noinput -v 0

# Serves in the foreground until interrupted, on the embedded default unless configured.
run: migrate
	exec $(VENV)/bin/gunicorn -c mediasite/gunicorn_conf.py mediasite.wsgi:application

worker: install
	$(VENV)/bin/celery -A mediasite worker -l info

beat: install
	$(VENV)/bin/celery -A mediasite beat -l info

test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

# Against real Matrix software: Synapse from PyPI (installed once into ~/.cache/mediasite-synapse)
# and, for federation, nginx as its TLS proxy; slow, so outside `make test`.
test-interop: install-dev
	$(PY) -m pytest -m interop tests/interop $(PYTEST_ARGS)

# Errors only (undefined names, unused imports, syntax): style is left to review.
lint: install-dev
	$(VENV)/bin/ruff check --select F,E9 media_app mediasite tests bench

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
