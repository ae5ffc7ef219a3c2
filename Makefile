# `make run`: set everything up and run the service in the foreground.
# `make test`: set everything up and run the whole test suite.
SHELL := /bin/bash
VENV := .venv
NPROC := $(shell nproc)
ENV ?= development
# What each target installs, from its lock file (requirements/*.txt, hashes checked):
# the programs only (`make run ENV=production`), plus the development S3 server, plus the tests.
RUN_LOCK := $(if $(filter development,$(ENV)),development,runtime)

.PRECIOUS: $(VENV)/.installed-%
.PHONY: run restart test lint bench quality soak abuse lock rabbitmq system-packages \
	test-packages python-version install status clean

# pip and the build backend come from their own lock (requirements/bootstrap.txt), hashes
# checked too: `pip install -e .` then builds with that setuptools, nothing fetched unpinned.
$(VENV)/.installed-%: requirements/%.txt requirements/bootstrap.txt pyproject.toml | \
		system-packages python-version
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --require-hashes -r requirements/bootstrap.txt
	$(VENV)/bin/pip install -q --require-hashes --no-deps -r requirements/$*.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

python-version:
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "image-server needs Python 3.11 or newer; python3 is $$(python3 --version 2>&1)"; \
		exit 1; }

# Refresh the lock files from pyproject.toml (pip-tools in a venv of its own).
lock: python-version
	test -x var/lock-tools/bin/pip-compile || { python3 -m venv var/lock-tools && \
		var/lock-tools/bin/pip install -q pip-tools==7.6.2; }
	for lock in runtime:"" development:"--extra development" \
			test:"--extra development --extra test"; do \
		var/lock-tools/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras \
			--no-emit-index-url --no-emit-find-links $${lock#*:} \
			-o requirements/$${lock%%:*}.txt pyproject.toml || exit 1; \
	done
	var/lock-tools/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements/bootstrap.txt requirements/bootstrap.in

system-packages:
	scripts/install-system-packages.sh

test-packages:
	scripts/install-system-packages.sh test

rabbitmq: system-packages
	scripts/install-system-packages.sh rabbitmq
	scripts/ensure-rabbitmq.sh

# One host's programs under supervisord, as a container runs them (ops/host.py: the
# queues brought up to date, then one frontend per core, two at least, and one
# processor per core); development adds its S3 server and sample origin.
run: $(VENV)/.installed-$(RUN_LOCK) rabbitmq
	scripts/ensure-vhost.sh $(ENV)
	exec $(VENV)/bin/image-server host -e $(ENV) --config-dir $(CURDIR)/config \
		$(if $(filter development,$(ENV)),--dev-services,)

# Two workers (pytest-xdist) for every test but those that stop the local RabbitMQ
# node, which then run alone: a stopped broker would fail the other worker's tests.
# The tests marked `long` (clusters, containers) come first in the collection, and
# xdist hands each worker a run of consecutive tests to start with: one worker runs
# them one after the other while the other takes the rest. (`--dist loadgroup`
# would say so outright, but pytest-xdist 3.8 cannot group under pytest 9.)
test: $(VENV)/.installed-test test-packages rabbitmq lint
	$(VENV)/bin/python -m pytest --numprocesses 2 -m "not stops_broker"
	$(VENV)/bin/python -m pytest -m stops_broker

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy common frontend processor uploader ops bench testkit tests

bench: $(VENV)/.installed-test test-packages rabbitmq
	bench/setup.sh
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python -m bench.run $(BENCH_ARGS)
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python -m bench.quality

# More new outputs than the upload rate for minutes (bench/SOAK.md), about 5 minutes
# (`python -m bench.soak --minutes 20` for the 20-minute run SOAK.md shows).
soak: $(VENV)/.installed-test rabbitmq
	bench/setup.sh
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python -m bench.soak

# Output size and quality only (bench/QUALITY.md), about 10 minutes.
quality: $(VENV)/.installed-test test-packages
	bench/setup.sh
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python -m bench.quality

# What one anonymous client can make the service do, open versus as shipped (bench/ABUSE.md),
# about 8 minutes.
abuse: $(VENV)/.installed-test rabbitmq
	bench/setup.sh
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python -m bench.abuse

# Every frontend, then every processor, ... one at a time: no failed request.
restart: $(VENV)/.installed-$(RUN_LOCK)
	$(VENV)/bin/image-server restart -e $(ENV)

# A production host: the runtime install, a system user, and the systemd unit for this
# checkout (then `systemctl daemon-reload && systemctl enable --now image-server`).
install: $(VENV)/.installed-runtime
	id -u image-server >/dev/null 2>&1 || \
		useradd --system --home-dir $(CURDIR) --shell /usr/sbin/nologin image-server
	mkdir -p var/run var/log && chown -R image-server:image-server var
	sed "s|/srv/image-server|$(CURDIR)|g" deploy/image-server.service \
		> /etc/systemd/system/image-server.service
	@echo "installed /etc/systemd/system/image-server.service for $(CURDIR);" \
		"put the secrets in /etc/default/image-server (README, Running it in production)"

status:
	$(VENV)/bin/supervisorctl -c supervisord.conf status

clean:
	rm -rf var
