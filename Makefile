# remotefs developer targets. Each one is a thin wrapper: the work is in
# scripts/ and in the Go packages.
#
#   make build   bin/remotefs and bin/netproxy
#   make test    install missing deps, go vet, every test with -race; the
#                end-to-end tests fail (not skip) without sshd or FUSE
#   make demo    scripts/demo.sh: mount a throwaway sshd, edit, unmount
#   make stress  long randomized/model tests (REMOTEFS_STRESS=1)
#   make fuzz    every Fuzz* target, FUZZTIME each (default 20s)
#   make bench   go run ./bench $(BENCHFLAGS), e.g. BENCHFLAGS='-quick' or
#                BENCHFLAGS='-rtt 100ms -out bench.md'
#   make clean   remove bin/
#   make install     bin/remotefs to $(PREFIX)/bin (default /usr/local), so
#                    that mount -t fuse.remotefs and fstab find it, and the
#                    systemd user unit to $(PREFIX)/lib/systemd/user
#                    (builds first if bin/remotefs is missing; after a code
#                    change: make build && sudo make install)
#   make uninstall   remove them
#
# Works as root, or as a user with sudo (scripts/install-deps.sh asks sudo
# only for apt-get and only when something is missing).

SHELL := /bin/bash
GO ?= go
FUZZTIME ?= 20s
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all build deps test stress fuzz bench demo clean install uninstall

all: build

build:
	$(GO) build -o bin/remotefs ./cmd/remotefs
	$(GO) build -o bin/netproxy ./internal/netproxy/cmd/netproxy

deps:
	bash scripts/install-deps.sh

test: deps
	$(GO) vet ./...
	REMOTEFS_REQUIRE_SSHD=1 REMOTEFS_REQUIRE_FUSE=1 \
		REMOTEFS_REQUIRE_USERS=$(if $(filter 0,$(shell id -u)),1,) \
		$(GO) test -race -count=1 -timeout 15m ./...

stress: deps
	REMOTEFS_STRESS=1 $(GO) test -count=1 -timeout 60m -run 'Stress|Model|Scale|ReadsRace|LargeReadThroughput|LookupBesideLargeRead' ./...

fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

bench: deps build
	$(GO) run ./bench $(BENCHFLAGS)

demo:
	bash scripts/demo.sh

clean:
	rm -rf bin

install:
	@test -x bin/remotefs || $(MAKE) build
	install -D -m 0755 bin/remotefs $(DESTDIR)$(PREFIX)/bin/remotefs
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/user
	sed 's|/usr/local/bin/remotefs|$(PREFIX)/bin/remotefs|g' contrib/systemd/remotefs@.service \
		> $(DESTDIR)$(PREFIX)/lib/systemd/user/remotefs@.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/user/remotefs@.service

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/remotefs $(DESTDIR)$(PREFIX)/lib/systemd/user/remotefs@.service
