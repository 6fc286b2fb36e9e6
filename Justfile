# busway: `just` lists the recipes.

set dotenv-load := false
set positional-arguments := true

[private]
default:
    @just --list

# Run the whole system: Redis if needed, users, auth, activity, mailer and the gateway (Ctrl-C stops all)
[group('run')]
up:
    uv run busway up

# Run one service in the foreground: users, auth, activity, mailer or gateway
[group('run')]
run service:
    uv run busway run "$1"

# Apply the database migrations of users, auth and activity
[group('run')]
migrate:
    uv run busway migrate

# Run the test suite against real Redis and a real database (pass pytest args after it)
[group('dev')]
test *args:
    uv run pytest "$@"

# Lint, format check, strict typing, architecture contracts
[group('dev')]
check:
    uv run ruff check .
    uv run ruff format --check .
    uv run mypy
    uv run lint-imports

# Format the code
[group('dev')]
fmt:
    uv run ruff format .
    uv run ruff check --fix .

# Benchmark busway against a monolith, an HTTP proxy and FastStream request (--quick for a smoke test)
[group('perf')]
bench *args:
    uv run python -m bench.run "$@"

# The bus round trip alone (BusClient to a users handler, no HTTP): CPU per request on each side
[group('perf')]
bench-roundtrip *args:
    uv run python -m bench.roundtrip "$@"

# The gateway's HTTP layer alone (the bus answering at once): CPU per request beside a bare Litestar route
[group('perf')]
bench-gateway *args:
    uv run python -m bench.gateway "$@"

# The outbox relay's claim alone on PostgreSQL: CPU per pass, asyncpg against the ORM
[group('perf')]
bench-outbox *args:
    uv run python -m bench.outbox "$@"

# Regenerate docs/events.md, docs/asyncapi.json and the contracts snapshot (refuses an incompatible change unless --accept-breaking)
[group('contracts')]
contracts *args:
    uv run python -m schemas.generate "$@"

# Regenerate docs/asyncapi.json alone (the AsyncAPI 3.0 document of the bus)
[group('contracts')]
asyncapi:
    uv run python -m schemas.generate --only asyncapi
