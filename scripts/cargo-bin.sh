# Sourced by scripts/test.sh, scripts/schemathesis.sh, bench/lib.sh and
# clients/python/run-tests.sh: where cargo puts this package's binaries, asked of cargo itself,
# so that CARGO_TARGET_DIR, CARGO_BUILD_TARGET and .cargo/config.toml are honoured.
# shellcheck shell=bash

# cargo_bin NAME [cargo build arguments, e.g. --release]: builds the binary NAME (nothing to do
# when it is fresh) and prints the path of the executable. Query macros compile against the
# committed .sqlx metadata unless SQLX_OFFLINE says otherwise.
cargo_bin() {
    local name="$1"
    shift
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." &&
        SQLX_OFFLINE="${SQLX_OFFLINE:-true}" cargo build --locked \
            --message-format=json-render-diagnostics --bin "$name" "$@") |
        python3 -c '
import json, sys
name = sys.argv[1]
paths = [
    message["executable"]
    for message in map(json.loads, sys.stdin)
    if message.get("reason") == "compiler-artifact"
    and message["target"]["name"] == name
    and message.get("executable")
]
if not paths:
    sys.exit(f"cargo built no executable {name}")
print(paths[-1])
' "$name"
}

# Prints cargo's target directory (target/ unless CARGO_TARGET_DIR or a config moves it).
cargo_target_dir() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo metadata --format-version 1 --no-deps) |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}
