#!/usr/bin/env bash
# Lists the import edges between the crate's modules (`module -> module it uses`, from
# every `crate::` path outside comments) and fails if they form a cycle.
# Usage: scripts/imports.sh [--quiet]
set -euo pipefail
cd "$(dirname "$0")/.."

edges=$(for file in src/*.rs; do
    module=$(basename "$file" .rs)
    [ "$module" = lib ] && continue
    # Drop comments (doc links are not imports), join lines so that a `use crate::{..}`
    # spanning several lines is one, then print each module a `crate::` path names.
    perl -0777 -ne '
        s{//[^\n]*}{}g;
        while (/\bcrate::\{([^}]*)\}/g) { print "$_\n" for map { /^\s*([a-z_]+)/ ? $1 : () } split /,/, $1 }
        while (/\bcrate::([A-Za-z_]+)/g) { print "$1\n" }
    ' "$file" | sort -u | while read -r used; do
        if [[ "$used" =~ ^[A-Z] ]]; then
            echo "$file: crate::$used goes through a re-export of lib.rs; name the module" >&2
            echo "BAD BAD"
        elif [ "$used" != "$module" ]; then
            echo "$module $used"
        fi
    done
done)

if grep -q '^BAD' <<<"$edges"; then
    exit 1
fi
[ "${1:-}" = --quiet ] || sed 's/ / -> /' <<<"$edges"
# tsort fails (and names the loop) when the edges contain a cycle.
if ! order=$(tsort <<<"$edges" 2>/tmp/imports-tsort.$$); then
    cat /tmp/imports-tsort.$$ >&2
    rm -f /tmp/imports-tsort.$$
    echo "imports: the modules' imports form a cycle" >&2
    exit 1
fi
rm -f /tmp/imports-tsort.$$
echo "imports: no cycle; from the top: $(tr '\n' ' ' <<<"$order")"
