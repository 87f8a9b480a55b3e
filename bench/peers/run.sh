#!/usr/bin/env bash
# run.sh starts Redis and PostgreSQL on loopback (non-default ports, data in a
# temp dir, persistence as the baselines had it: Redis AOF everysec,
# PostgreSQL defaults with fsync on), runs the peer comparison with the given
# flags, and stops both servers on exit. Missing servers are installed from
# Debian packages (needs root and apt).
#
#	bench/peers/run.sh -n 100000 -window 10s -producers 4 [-systems asynq,river,...]
#
# Not part of CI. Environment: REDIS_PORT (56379), PG_PORT (55432).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
redis_port=${REDIS_PORT:-56379}
pg_port=${PG_PORT:-55432}

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[[ -n "$pg_bin" && -x "$pg_bin/initdb" ]] || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
	echo "installing ${need_apt[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
	pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
fi

tmp=$(mktemp -d /tmp/hourglass-peers-run.XXXXXX)
chmod 755 "$tmp"
# PostgreSQL refuses to run as root: run it as the postgres user.
as_pg=()
if [[ $(id -u) == 0 ]]; then
	id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
	as_pg=(runuser -u postgres --)
	mkdir "$tmp/pg"
	chown postgres "$tmp/pg"
fi

stop() {
	set +e
	if [[ -f "$tmp/pg/data/postmaster.pid" ]]; then
		"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$tmp/pg/data" -m fast -w -t 60 stop >/dev/null
	fi
	if [[ -f "$tmp/redis.pid" ]]; then
		kill "$(cat "$tmp/redis.pid")"
		for _ in $(seq 1 50); do [[ -f "$tmp/redis.pid" ]] || break; sleep 0.1; done
	fi
	rm -rf "$tmp"
}
trap stop EXIT

redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$tmp" \
	--appendonly yes --appendfsync everysec --save '' \
	--daemonize yes --pidfile "$tmp/redis.pid" --logfile "$tmp/redis.log"
for _ in $(seq 1 100); do
	redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1 && break
	sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null

mkdir -p "$tmp/pg"
"${as_pg[@]}" "$pg_bin/initdb" -D "$tmp/pg/data" -U postgres --auth=trust >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/log" -w -t 60 \
	-o "-c listen_addresses=127.0.0.1 -p $pg_port -k $tmp/pg" start >/dev/null

echo "redis $(redis-server --version | awk '{print $3}') on 127.0.0.1:$redis_port (AOF everysec);" \
	"$("$pg_bin/postgres" --version) on 127.0.0.1:$pg_port (fsync on, defaults)" >&2
cd "$here"
go run . -redis "127.0.0.1:$redis_port" \
	-pg "postgres://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable" "$@"
