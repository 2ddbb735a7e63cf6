#!/bin/sh
# The bundled Redis of docker-compose.yml (service `redis`, mounted at /rss/redis.sh): it requires
# the password that RSS_REDIS_URL carries (redis://:PASSWORD@redis:6379/0), the URL the service,
# the workers and the learner connect with, so the password is written once, in .env. It works
# with any image that has sh, redis-server and redis-cli (redis:7.2-alpine, deploy/local-images.sh's
# Debian stand-in). With a password Redis's protected mode refuses no one who has it, and every
# client without it gets NOAUTH.
#
#   redis.sh [redis-server flags...]   exec redis-server --requirepass <the password> <flags>
#   redis.sh ping [redis-cli flags...] the healthcheck: exit 0 when an authenticated PING answers PONG
#
# Write the password in characters a URL keeps as they are (openssl rand -hex 24): it is not
# %-decoded here.
set -eu
url=${RSS_REDIS_URL:-}
rest=${url#*://}
userinfo=${rest%@*}
password=${userinfo#*:}
if [ -z "$url" ] || [ "$userinfo" = "$rest" ] || [ "$password" = "$userinfo" ] || [ -z "$password" ]; then
    echo "redis.sh: RSS_REDIS_URL has no password; set RSS_REDIS_URL=redis://:<password>@redis:6379/0 in .env" \
        "(the bundled Redis refuses to start without one)" >&2
    exit 1
fi
export REDISCLI_AUTH="$password"  # redis-cli reads it; never on a command line
if [ "${1:-}" = ping ]; then
    shift
    answer=$(redis-cli --no-auth-warning "$@" ping) && [ "$answer" = PONG ]
    exit
fi
exec redis-server --requirepass "$password" "$@"
