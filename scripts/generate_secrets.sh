#!/usr/bin/env bash
# Generate strong WasmWiz secrets: API_SALT, JWT_SECRET and database passwords.
#
#   scripts/generate_secrets.sh -o .env
#       an env file for docker compose: POSTGRES_PASSWORD, API_SALT, JWT_SECRET
#   scripts/generate_secrets.sh --format k8s -n wasmwiz --db-host pg.internal | kubectl apply -f -
#       a Kubernetes Secret with DATABASE_URL, WORKER_DATABASE_URL, REDIS_URL,
#       NATS_URL, API_SALT, JWT_SECRET and the two database passwords, for the
#       plain manifests (name wasmwiz) or the Helm chart's secrets.existingSecret
#
# Options:
#   -o, --output FILE    write FILE (mode 0600) instead of standard output
#   --force              overwrite FILE
#   --format env|k8s     default env
#   -n, --namespace NS   k8s: namespace (default wasmwiz)
#   --name NAME          k8s: Secret name (default wasmwiz)
#   --db-host HOST       k8s: PostgreSQL host (default postgres)
#   --db-port PORT       k8s: default 5432
#   --db-name NAME       k8s: database (default wasmwiz)
#   --db-sslmode MODE    k8s: default require
#   --redis-url URL      k8s: default redis://redis:6379/0
#   --nats-url URL       k8s: default nats://nats:4222
#
# Passwords are hex, so they need no escaping inside a URL. Rotating API_SALT
# invalidates every API key: generate it once per installation and keep it.
set -euo pipefail

die() { echo "generate_secrets.sh: $*" >&2; exit 2; }

format=env output="" force=0
namespace=wasmwiz name=wasmwiz
db_host=postgres db_port=5432 db_name=wasmwiz db_sslmode=require
redis_url=redis://redis:6379/0 nats_url=nats://nats:4222

while [ $# -gt 0 ]; do
	case "$1" in
	-o | --output) output=${2:?"$1 needs a file"}; shift 2 ;;
	--force) force=1; shift ;;
	--format) format=${2:?"$1 needs env or k8s"}; shift 2 ;;
	-n | --namespace) namespace=${2:?"$1 needs a namespace"}; shift 2 ;;
	--name) name=${2:?"$1 needs a name"}; shift 2 ;;
	--db-host) db_host=${2:?"$1 needs a host"}; shift 2 ;;
	--db-port) db_port=${2:?"$1 needs a port"}; shift 2 ;;
	--db-name) db_name=${2:?"$1 needs a name"}; shift 2 ;;
	--db-sslmode) db_sslmode=${2:?"$1 needs a mode"}; shift 2 ;;
	--redis-url) redis_url=${2:?"$1 needs a URL"}; shift 2 ;;
	--nats-url) nats_url=${2:?"$1 needs a URL"}; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
case "$format" in env | k8s) ;; *) die "--format must be env or k8s, not $format" ;; esac

# Bytes from the kernel's CSPRNG, as hex.
rand_hex() { od -An -vtx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# A YAML double-quoted scalar.
yq() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }

api_salt=$(rand_hex 24)       # 48 characters
jwt_secret=$(rand_hex 32)     # 64 characters
db_password=$(rand_hex 24)
worker_db_password=$(rand_hex 24)
if [ ${#api_salt} -lt 16 ] || [ ${#jwt_secret} -lt 32 ]; then die "reading /dev/urandom failed"; fi

emit() {
	case "$format" in
	env)
		cat <<-ENV
			# WasmWiz secrets for docker compose, generated $(date -u +%Y-%m-%dT%H:%M:%SZ).
			# Keep this file out of version control. Changing API_SALT invalidates every API key.
			POSTGRES_PASSWORD=$db_password
			API_SALT=$api_salt
			JWT_SECRET=$jwt_secret
		ENV
		;;
	k8s)
		local base="$db_host:$db_port/$db_name?sslmode=$db_sslmode"
		cat <<-YAML
			# WasmWiz secrets, generated $(date -u +%Y-%m-%dT%H:%M:%SZ). Apply it, do not commit it.
			# Create the roles with POSTGRES_PASSWORD and WORKER_DB_PASSWORD (deploy/README.md).
			apiVersion: v1
			kind: Secret
			metadata:
			  name: $(yq "$name")
			  namespace: $(yq "$namespace")
			  labels:
			    app.kubernetes.io/name: wasmwiz
			    app.kubernetes.io/part-of: wasmwiz
			type: Opaque
			stringData:
			  DATABASE_URL: $(yq "postgres://wasmwiz:$db_password@$base")
			  WORKER_DATABASE_URL: $(yq "postgres://wasmwiz_worker:$worker_db_password@$base")
			  REDIS_URL: $(yq "$redis_url")
			  NATS_URL: $(yq "$nats_url")
			  API_SALT: $(yq "$api_salt")
			  JWT_SECRET: $(yq "$jwt_secret")
			  POSTGRES_PASSWORD: $(yq "$db_password")
			  WORKER_DB_PASSWORD: $(yq "$worker_db_password")
		YAML
		;;
	esac
}

if [ -z "$output" ]; then
	emit
	exit 0
fi
if [ -e "$output" ] && [ "$force" -ne 1 ]; then
	die "$output exists; it may hold the secrets of a running installation (--force overwrites)"
fi
umask 077
tmp=$(mktemp "$(dirname -- "$output")/.secrets.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
emit >"$tmp"
chmod 600 "$tmp"
mv -f -- "$tmp" "$output"
trap - EXIT
echo "wrote $output" >&2
