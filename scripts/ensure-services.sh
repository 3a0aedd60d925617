#!/usr/bin/env bash
# Make sure the three local services Switchboard needs are up: RabbitMQ (127.0.0.1:5672),
# Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432). Starts whichever is down and waits
# until it answers. Idempotent, and quick when everything is up. Never stops anything.
set -euo pipefail

readonly WAIT_S=60

say() { printf 'ensure-services: %s\n' "$*" >&2; }

need() { # need COMMAND PACKAGE
    if ! command -v "$1" >/dev/null 2>&1; then
        say "$1 not found: install $2 (e.g. apt-get install $2)"
        exit 1
    fi
}

port_open() { # port_open PORT: a TCP connect to 127.0.0.1, no client needed
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

rabbitmq_up() { port_open 5672; }
redis_up() { [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]; }
postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432; }

wait_for() { # wait_for NAME PROBE
    local deadline=$((SECONDS + WAIT_S))
    until "$2"; do
        if ((SECONDS >= deadline)); then
            say "$1 did not answer within ${WAIT_S} s"
            exit 1
        fi
        sleep 0.2
    done
    say "$1 is up"
}

start_rabbitmq() {
    need rabbitmq-server rabbitmq-server
    say "starting RabbitMQ"
    rabbitmq-server -detached
    timeout "$WAIT_S" rabbitmqctl await_startup >/dev/null
    wait_for RabbitMQ rabbitmq_up
}

start_redis() {
    need redis-server redis-server
    say "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis redis_up
}

start_postgres() {
    need pg_ctlcluster postgresql
    say "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    wait_for PostgreSQL postgres_up
}

need redis-cli redis-tools
need pg_isready postgresql-client

rabbitmq_up || start_rabbitmq
redis_up || start_redis
postgres_up || start_postgres
