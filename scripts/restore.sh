#!/usr/bin/env bash
# Restore the WasmWiz database from a dump made by backup.sh.
#
#   DATABASE_URL=postgres://user:pass@host:5432/wasmwiz scripts/restore.sh [-y] [-O] [-d DIR] latest|FILE
#
# latest       the newest wasmwiz-*.dump in BACKUP_DIR (-d, default ./backups)
# FILE         a dump file
# -y           do not ask (needed when standard input is not a terminal)
# -O           --no-owner --no-privileges: for a server without the original
#              roles (the grants to the worker role are then yours to redo)
#
# Stop the api and the workers first. The restore replaces every object the
# dump holds (pg_restore --clean --if-exists) in one transaction: if anything
# fails, the database is left as it was.
set -euo pipefail

die() { echo "restore.sh: $*" >&2; exit 1; }

dir=${BACKUP_DIR:-./backups}
yes=0 owner_flags=()
while getopts 'd:yOh' opt; do
	case "$opt" in
	d) dir=$OPTARG ;;
	y) yes=1 ;;
	O) owner_flags=(--no-owner --no-privileges) ;;
	h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || die "usage: restore.sh [-y] [-O] [-d DIR] latest|FILE"
[ -n "${DATABASE_URL:-}" ] || die "DATABASE_URL is not set"
command -v pg_restore >/dev/null || die "pg_restore not found: install the PostgreSQL client (apt-get install postgresql-client)"

if [ "$1" = latest ]; then
	[ -d "$dir" ] || die "no backup directory $dir"
	file=$(find "$dir" -maxdepth 1 -type f -name 'wasmwiz-*.dump' | sort -r | head -n 1)
	[ -n "$file" ] || die "no wasmwiz-*.dump in $dir"
else
	file=$1
	[ -f "$file" ] || die "no such file: $file"
fi
pg_restore --list "$file" >/dev/null || die "$file is not a pg_dump custom-format archive"

# The password travels in PGPASSWORD, pgx-only parameters go: lib/pg.sh.
# shellcheck source=SCRIPTDIR/lib/pg.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pg.sh"
to_libpq "$DATABASE_URL"

if [ "$yes" -ne 1 ]; then
	[ -t 0 ] || die "refusing to overwrite the database without -y (standard input is not a terminal)"
	printf 'Replace the contents of %s with %s? Type yes: ' "$url" "$file" >&2
	read -r answer
	[ "$answer" = yes ] || die "not confirmed; nothing changed"
fi

echo "restore.sh: restoring $file" >&2
pg_restore --clean --if-exists --single-transaction --exit-on-error --no-password \
	"${owner_flags[@]}" --dbname="$url" "$file" ||
	die "pg_restore failed; the transaction was rolled back and the database is unchanged"
echo "restore.sh: restored $file" >&2
