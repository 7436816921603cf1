# Each target creates .venv and installs what it needs on a fresh machine.
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	# bytecode for the editable sources: a node started where PYTHONDONTWRITEBYTECODE is set
	# would compile them all again on every start (0.9 s of imports against 0.6 s measured)
	$(VENV)/bin/python -m compileall -q amqp cluster replication
	touch $(STAMP)

.PHONY: install run test bench bench-backlog conformance-record
install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/warren up

test: $(STAMP)
	$(VENV)/bin/pytest

bench: $(STAMP)
	bash bench/compare.sh

# a backlog bigger than memory: RSS, disk, publish, restart and drain against RabbitMQ
bench-backlog: $(STAMP)
	bash bench/backlog.sh

# what a real RabbitMQ does in every conformance scenario: tests/conformance/expected/rabbitmq.txt
conformance-record: $(STAMP)
	bash bench/conformance.sh
