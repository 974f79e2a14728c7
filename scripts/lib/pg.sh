# Shared by backup.sh and restore.sh; sourced, not run.
# shellcheck shell=bash

# to_libpq sets url to DATABASE_URL without its password and without the
# pgx-only parameters libpq rejects, and exports the password as PGPASSWORD,
# so that it never shows in the process list.
to_libpq() {
	url=$1
	local re='^(postgres(ql)?://)([^:@/?]*)(:([^@/?]*))?@(.*)$'
	if [[ $url =~ $re ]]; then
		local scheme=${BASH_REMATCH[1]} user=${BASH_REMATCH[3]} pass=${BASH_REMATCH[5]} rest=${BASH_REMATCH[6]}
		if [ -n "$pass" ]; then
			PGPASSWORD=$(printf '%b' "${pass//%/\\x}")
			export PGPASSWORD
		fi
		url="$scheme$user@$rest"
	fi
	if [[ $url == *\?* ]]; then
		local base=${url%%\?*} query=${url#*\?} kept="" param
		local IFS='&'
		for param in $query; do
			case "$param" in
			pool_* | statement_cache_capacity=* | description_cache_capacity=* | default_query_exec_mode=*) ;;
			*) kept="${kept:+$kept&}$param" ;;
			esac
		done
		url="$base${kept:+?$kept}"
	fi
}
