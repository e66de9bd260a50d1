# Sourced by scripts/test.sh, .ci/run and bench/lib.sh: where the PostgreSQL server binaries
# are, in the same order as src/db/embedded.rs ($PATH, `pg_config --bindir`, the newest
# /usr/lib/postgresql/*/bin).

has_server_binaries() { [[ -x "$1/initdb" && -x "$1/pg_ctl" ]]; }

# Prints the directory holding initdb and pg_ctl; fails when there is none.
find_pg_bindir() {
    local dir
    local -a path_dirs
    IFS=: read -r -a path_dirs <<<"$PATH"
    for dir in "${path_dirs[@]}"; do
        if has_server_binaries "$dir"; then
            printf '%s\n' "$dir"
            return
        fi
    done
    if dir="$(pg_config --bindir 2>/dev/null)" && has_server_binaries "$dir"; then
        printf '%s\n' "$dir"
        return
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r); do
        if has_server_binaries "$dir"; then
            printf '%s\n' "$dir"
            return
        fi
    done
    return 1
}
