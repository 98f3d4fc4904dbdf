# Quick start: `make demo` runs ChargeBridge on its built-in demo data; `make test` runs every test.
.PHONY: setup demo check test bench clean deb

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/with-keyring.sh .venv/bin/chargebridge demo

check: setup
	@bash scripts/check.sh

# static checks (ruff, mypy, import contracts) first, then every test
test: check
	@bash scripts/with-keyring.sh .venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	@bash scripts/with-keyring.sh .venv/bin/python -m pytest tests/bench -s --timeout=0 -o 'python_files=bench_*.py' $(PYTEST_ARGS)

# Linux package from the frozen bundle (builds dist/chargebridge/ first): dist/chargebridge_<version>_<arch>.deb
deb: setup
	@bash installer/build.sh
	@.venv/bin/python installer/deb/build_deb.py

clean:
	rm -rf .venv .pytest_cache build dist
