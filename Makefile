.PHONY: test dev lint bench

# Everything: venv, install, services, ruff, mypy, pytest. Extra pytest arguments: make test ARGS='-k auth'
test:
	scripts/test.sh $(ARGS)

# The whole service on this machine with a demo project (see README).
dev:
	scripts/dev.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy
