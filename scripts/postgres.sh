# Sourced by scripts/cluster.sh and .ci/run: where the PostgreSQL server binaries
# are, in the same order as src/db/embedded.rs ($PATH, `pg_config --bindir`, the newest
# /usr/lib/postgresql/*/bin).
# shellcheck shell=bash

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

# Prints the path of a PostgreSQL program (psql, pgbench, ...): the one beside initdb (or beside
# the file a linked initdb points to), else the first in $PATH; fails when there is none.
find_pg_tool() {
    local dir real
    if dir="$(find_pg_bindir)"; then
        real="$(dirname "$(readlink -f "$dir/initdb")")"
        for dir in "$dir" "$real"; do
            if [[ -x "$dir/$1" ]]; then
                printf '%s\n' "$dir/$1"
                return
            fi
        done
    fi
    command -v "$1"
}
