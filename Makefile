# remotefs developer targets. Each one is a thin wrapper: the work is in
# scripts/ and in the Go packages.
#
#   make build   bin/remotefs and bin/netproxy
#   make test    install missing deps, go vet, every test with -race; the
#                end-to-end tests fail (not skip) without sshd or FUSE
#   make demo    scripts/demo.sh: mount a throwaway sshd, edit, unmount
#   make stress  long randomized/model tests (REMOTEFS_STRESS=1)
#   make fuzz    every Fuzz* target, FUZZTIME each (default 20s)
#   make bench   go run ./bench
#   make clean   remove bin/
#
# Works as root, or as a user with sudo (scripts/install-deps.sh asks sudo
# only for apt-get and only when something is missing).

SHELL := /bin/bash
GO ?= go
FUZZTIME ?= 20s

.PHONY: all build deps test stress fuzz bench demo clean

all: build

build:
	$(GO) build -o bin/remotefs ./cmd/remotefs
	$(GO) build -o bin/netproxy ./internal/netproxy/cmd/netproxy

deps:
	bash scripts/install-deps.sh

test: deps
	$(GO) vet ./...
	REMOTEFS_REQUIRE_SSHD=1 REMOTEFS_REQUIRE_FUSE=1 \
		$(GO) test -race -count=1 -timeout 15m ./...

stress: deps
	REMOTEFS_STRESS=1 $(GO) test -count=1 -timeout 60m -run 'Stress|Model' ./...

fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

bench: deps build
	$(GO) run ./bench

demo:
	bash scripts/demo.sh

clean:
	rm -rf bin
