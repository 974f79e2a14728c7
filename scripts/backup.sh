#!/usr/bin/env bash
# Back up the WasmWiz database: one pg_dump in custom format, then keep only
# the newest KEEP dumps.
#
#   DATABASE_URL=postgres://user:pass@host:5432/wasmwiz scripts/backup.sh [-d DIR] [-k KEEP]
#
# DATABASE_URL   required; pgx-only parameters (pool_*) are dropped, and the
#                password goes to libpq through PGPASSWORD, not the command line
# BACKUP_DIR, -d where dumps go (default ./backups); files are named
#                wasmwiz-YYYYMMDDTHHMMSSZ.dump, so names sort by age
# BACKUP_KEEP, -k how many dumps to keep (default 7)
#
# The dump is written under a temporary name and checked with pg_restore
# --list before it takes its final name, so rotation and `restore.sh latest`
# never see a partial file. Prints the new file's path.
set -euo pipefail

die() { echo "backup.sh: $*" >&2; exit 1; }

dir=${BACKUP_DIR:-./backups}
keep=${BACKUP_KEEP:-7}
while getopts 'd:k:h' opt; do
	case "$opt" in
	d) dir=$OPTARG ;;
	k) keep=$OPTARG ;;
	h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument $1"
[ -n "${DATABASE_URL:-}" ] || die "DATABASE_URL is not set"
case "$keep" in '' | *[!0-9]* | 0) die "KEEP must be a whole number of at least 1, not '$keep'" ;; esac
for tool in pg_dump pg_restore; do
	command -v "$tool" >/dev/null || die "$tool not found: install the PostgreSQL client (apt-get install postgresql-client)"
done

# to_libpq: see lib/pg.sh (shared with the other database script).
# shellcheck source=SCRIPTDIR/lib/pg.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pg.sh"
to_libpq "$DATABASE_URL"

mkdir -p -- "$dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
final="$dir/wasmwiz-$stamp.dump"
[ ! -e "$final" ] || die "$final already exists; run again in a second"
partial="$dir/.wasmwiz-$stamp.dump.partial"
trap 'rm -f -- "$partial"' EXIT

pg_dump --format=custom --compress=6 --no-password --file="$partial" --dbname="$url" ||
	die "pg_dump failed; no backup was written"
pg_restore --list "$partial" >/dev/null || die "the new dump cannot be read back; kept the old ones"
mv -- "$partial" "$final"
trap - EXIT

# Rotation: the names sort by time, newest first; drop all past KEEP.
find "$dir" -maxdepth 1 -type f -name 'wasmwiz-*.dump' | sort -r | tail -n "+$((keep + 1))" |
	while IFS= read -r old; do
		rm -f -- "$old"
		echo "backup.sh: removed $old" >&2
	done
echo "$final"
