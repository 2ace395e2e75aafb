# The verbs people expect. `make test` is what CI runs.
.PHONY: run test lint fmt bench demo man deb

run: ## start one node on the embedded default (SQLite + ./cuttle-data)
	cargo run --release -p cuttle-server -- run

test: ## the whole suite; installs PostgreSQL for the tests when missing
	./scripts/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

bench: ## queue throughput and latency on SQLite and PostgreSQL
	cargo run --release -p cuttle-bench -- queue

demo: run

man: ## the CLI's manual pages, one per command, into target/man (install: copy to man1/)
	cargo build --release -p cuttle-cli
	./target/release/cuttle man --dir target/man

deb: ## Debian packages (cuttle-server, cuttle-tentacle, cuttle) from release binaries, into target/debian
	./packaging/build-debs.sh target/debian
