.PHONY: install test lint bench

install:
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'

# The README's test command.
test:
	python -m pytest -q -p no:cacheprovider

lint:
	ruff check .

bench:
	python bench/bench.py --preset tiny
