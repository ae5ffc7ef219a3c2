# `make run`: set everything up and run the service in the foreground.
# `make test`: set everything up and run the whole test suite.
SHELL := /bin/bash
VENV := .venv
INSTALLED := $(VENV)/.installed
NPROC := $(shell nproc)
ENV ?= development

.PHONY: run restart test lint bench quality soak abuse rabbitmq system-packages test-packages status clean

$(INSTALLED): pyproject.toml | system-packages
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

system-packages:
	scripts/install-system-packages.sh

test-packages:
	scripts/install-system-packages.sh test

rabbitmq: system-packages
	scripts/ensure-rabbitmq.sh

# Two frontends at least: a rolling restart needs one serving while another restarts.
FRONTENDS := $(shell n=$(NPROC); echo $$(( n < 2 ? 2 : n )))

run: $(INSTALLED) rabbitmq
	scripts/ensure-vhost.sh $(ENV)
	mkdir -p var/run var/log
	# Prometheus figures start afresh with the host (a counter reset).
	rm -rf var/metrics
	IMAGE_SERVER_ENV=$(ENV) IMAGE_SERVER_CONFIG_DIR=$(CURDIR)/config \
		IMAGE_SERVER_FRONTENDS=$(FRONTENDS) IMAGE_SERVER_PROCESSORS=$(NPROC) \
		IMAGE_SERVER_DEV_SERVICES=$(if $(filter development,$(ENV)),true,false) \
		exec $(VENV)/bin/supervisord -n -c supervisord.conf

test: $(INSTALLED) test-packages rabbitmq lint
	$(VENV)/bin/python -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy common frontend processor uploader bench tests

bench: $(INSTALLED) test-packages rabbitmq
	bench/setup.sh
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python -m bench.run $(BENCH_ARGS)
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python -m bench.quality

# More new outputs than the upload rate for minutes (bench/SOAK.md), about 5 minutes.
soak: $(INSTALLED) rabbitmq
	bench/setup.sh
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python -m bench.soak

# Output size and quality only (bench/QUALITY.md), about 10 minutes.
quality: $(INSTALLED) test-packages
	bench/setup.sh
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python -m bench.quality

# What one anonymous client can make the service do, open versus as shipped (bench/ABUSE.md),
# about 6 minutes.
abuse: $(INSTALLED) rabbitmq
	bench/setup.sh
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python -m bench.abuse

# Every frontend, then every processor, ... one at a time: no failed request.
restart: $(INSTALLED)
	$(VENV)/bin/python -m common.restart -e $(ENV)

status:
	$(VENV)/bin/supervisorctl -c supervisord.conf status

clean:
	rm -rf var
