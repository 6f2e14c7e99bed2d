# redis-migrate: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
export PATH := $(CURDIR)/.tools/azurite/node_modules/.bin:$(PATH)

.PHONY: deps build test test-short demo bench package fuzz vet clean

deps:            ## install redis-server, Azurite and Valkey 8 where missing
	@./.ci/install-deps.sh

build:
	$(GO) build -o redis-migrate .

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

test: deps vet   ## every test, against real redis-server, Valkey 8 and Azurite
	REQUIRE_VALKEY=1 REQUIRE_CORPUS=1 $(GO) test -count=1 -timeout 20m ./...

test-short: deps
	$(GO) test -count=1 -short -timeout 10m ./...

demo: deps build ## local servers, sample data, a real migration, a verification
	$(GO) run ./shared/cmd/demo

bench: build     ## throughput and memory against the reference figures in the issues
	@WITH_BENCH=1 ./.ci/install-deps.sh
	$(GO) run ./shared/cmd/bench

fuzz:            ## every fuzz target (RDB reader, DUMP codec, host payloads, HTTP requests, URLs), 20 s each
	GO=$(GO) FUZZTIME=$${FUZZTIME:-20s} ./.ci/fuzz.sh

package:         ## dist/: linux/amd64 handler, host.json, one folder per function, and a zip
	rm -rf dist && mkdir -p dist
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags "-s -w" -o dist/handler .
	cp host.json dist/
	for f in functions/*/function.json; do mkdir -p dist/$$(basename $$(dirname $$f)); cp $$f dist/$$(basename $$(dirname $$f))/; done
	cd dist && rm -f ../redis-migrate-app.zip && zip -qr ../redis-migrate-app.zip . && mv ../redis-migrate-app.zip .
	@echo "built dist/ and dist/redis-migrate-app.zip"

clean:
	rm -rf dist redis-migrate
