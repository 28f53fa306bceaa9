.PHONY: test bench

# Default target: install PostgreSQL if needed, then lint and run all tests.
test:
	./scripts/install-postgres.sh
	@files="$$(gofmt -l .)"; if [ -n "$$files" ]; then echo "gofmt needed:"; echo "$$files"; exit 1; fi
	go vet ./...
	go tool -modfile=tools/go.mod staticcheck ./...
	go test -race ./...

bench:
	go test -run '^$$' -bench . -benchtime 2s -count 3 .
