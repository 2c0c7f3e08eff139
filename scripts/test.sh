#!/usr/bin/env bash
# The one test command: creates .venv (if missing), installs virtualdom with its test extras,
# PostgreSQL's server (apt, when missing), the Node packages (buf for proto lint; yjs, the
# y-websocket and Hocuspocus providers for the interop and WebSocket tests; Hocuspocus's server for benchmarks/load/ws_rows.py; the editor
# page's build and playwright-core in web/), Debian's chromium (browser tests), and grpcurl and
# grpc-health-probe (Go) for the quick-start and operations tests, then runs ruff, mypy --strict,
# gofmt/go vet/staticcheck of the Go client, pytest (extra arguments go to it) and the Go tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# strict: the editable install is a link tree under build/ that mypy can read (it cannot run the
# import hook of a lenient one; pyproject.toml [tool.setuptools]). A module added later needs this
# line again.
.venv/bin/python -m pip install -q -e '.[test,otel,bench,postgres]' --config-settings editable_mode=strict
# PostgreSQL's server binaries, for the PostgreSQL store's tests (tests/postgres_server.py runs
# initdb + pg_ctl on a temporary folder): Debian's package, when they are missing.
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
for dir in proto tests/js clients/ts benchmarks/hocuspocus web; do
  if [ -f "$dir/package-lock.json" ]; then
    (cd "$dir" && npm ci --silent --no-audit --no-fund)
  fi
done
# Debian's chromium for the editor page's browser tests (tests/gateway/test_editor_page.py,
# driven by playwright-core from web/, which never downloads a browser of its own).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
mkdir -p .tools
if [ ! -x .tools/grpcurl ] && command -v go >/dev/null 2>&1; then
  GOBIN="$PWD/.tools" go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
fi
if [ ! -x .tools/grpc-health-probe ] && command -v go >/dev/null 2>&1; then
  GOBIN="$PWD/.tools" go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.62
fi
# ghz: the load generator of the benchmark harness's unary rows (benchmarks/README.md).
if [ ! -x .tools/ghz ] && command -v go >/dev/null 2>&1; then
  GOBIN="$PWD/.tools" go install github.com/bojand/ghz/cmd/ghz@v0.121.0
fi
# The Go client (clients/go, its own module; go.sum pins its modules): staticcheck for its lint.
# protoc-gen-go/-go-grpc for the generated code are installed by scripts/gen_proto.py.
if [ ! -x .tools/staticcheck ] && command -v go >/dev/null 2>&1; then
  GOBIN="$PWD/.tools" go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
export PATH="$PWD/.tools:$PATH"
.venv/bin/ruff check .
# The code is ruff-formatted (a `# fmt: skip` only where a comment above says why it is kept).
.venv/bin/ruff format --check .
.venv/bin/mypy -p virtualdom.engine -p virtualdom.server -p virtualdom.client
(cd clients/go && unformatted=$(gofmt -l .) && [ -z "$unformatted" ] || { echo "gofmt: $unformatted"; exit 1; })
(cd clients/go && go vet ./... && staticcheck ./...)
.venv/bin/python -m pytest "$@"
# The Go client's and the TypeScript conformance runner's tests start real gateways from
# .venv/bin/virtualdom.
(cd clients/go && go test -count=1 ./...)
(cd clients/ts && npm test)
# The whole benchmark suite (engine + gateway load harness) in quick mode, only to prove it runs
# (no pass/fail on speed; BENCHMARKS.md is left alone).
.venv/bin/python benchmarks/run.py --quick --no-write -- -p no:cacheprovider
