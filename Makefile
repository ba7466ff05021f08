# The checks CI runs (see .ci/run); `make test` is the README's test command
# and runs everything. The fast tier, `go test -short ./...`, skips the tests
# that build or run Caddy, or start redis-server or Node.js (internal/testkit).
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test lint unit caddy example bench fuzz

test: lint unit

lint:
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	go vet ./...
	$(STATICCHECK) ./...

unit:
	go test -race -count=1 -timeout 30m ./...

caddy:
	go build -o caddy ./cmd/caddy

example:
	go run ./cmd/caddy run --config Caddyfile.example

bench:
	bash bench/run.sh

# A short run of every fuzz target (the seed corpora run in `make test`).
fuzz:
	for p in ./verify/ ./ledger/; do \
		for f in $$(go test -list 'Fuzz.*' $$p | grep ^Fuzz); do go test -run XXX -fuzz "^$$f$$" -fuzztime 30s $$p || exit 1; done; \
	done
