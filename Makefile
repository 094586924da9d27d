# The two commands a newcomer needs:
#   make run    build and run the orchestrator on the example circles.json
#   make test   run the whole test suite against a real redis-server
# Both install what is missing first via apt-get: `run` redis-server, `test`
# also what the tests drive (scripts/install-deps.sh names it all).

CONFIG ?= circles.json
ARGS ?=

.PHONY: run test lint doc bench deps run-deps

deps:
	@./scripts/install-deps.sh

run-deps:
	@./scripts/install-deps.sh --run

run: run-deps
	cargo run --release --bin circles_orchestrator -- $(ARGS) $(CONFIG)

test: deps
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast && cargo test --workspace --doc; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi

lint:
	python3 scripts/check-layout.py
	python3 scripts/check-docs.py
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

bench:
	cargo bench -p ourdb
	cargo bench -p engine
	cargo bench -p worker
	cargo bench -p server_ws --bench idle_servers
	cargo bench -p cmd --bench scale
