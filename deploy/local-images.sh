#!/usr/bin/env bash
# Local stand-ins for the three public base images, for a machine that reaches no container registry
# (docs/deployment.md, "Building offline"). Each is a Debian bookworm root filesystem made by
# debootstrap from the mirror this machine's apt already uses, then `docker import`ed:
#
#   rss-local/python:3.11-bookworm   python3 (3.11), python3-venv      -> PYTHON_IMAGE (the Dockerfile's FROM)
#   rss-local/redis:7.0-bookworm     redis-server 7.0, runs as redis   -> REDIS_IMAGE
#   rss-local/nginx:1.22-bookworm    nginx 1.22, runs as www-data, no default site, listens where
#                                    deploy/nginx.conf says (8080)    -> PROXY_IMAGE
#
# Usage (root: debootstrap and docker need it):
#   deploy/local-images.sh                 # builds the missing ones; a tag that exists is skipped
#   deploy/local-images.sh --force         # rebuild all three
#   deploy/local-images.sh --print-env     # only print the compose variables that select them
#
# Downloaded .debs are kept in $RSS_DEPLOY_CACHE/debootstrap (default /var/cache/rss-deploy), so a
# rebuild on the same machine downloads nothing. The mirror is read from /etc/apt/sources.list(.d);
# set DEBIAN_MIRROR to choose another. Nothing is written to the repository.
set -euo pipefail

PREFIX=${LOCAL_IMAGE_PREFIX:-rss-local}
SUITE=bookworm
CACHE=${RSS_DEPLOY_CACHE:-/var/cache/rss-deploy}
PYTHON_TAG=$PREFIX/python:3.11-$SUITE
REDIS_TAG=$PREFIX/redis:7.0-$SUITE
NGINX_TAG=$PREFIX/nginx:1.22-$SUITE

print_env() {
    echo "PYTHON_IMAGE=$PYTHON_TAG"
    echo "REDIS_IMAGE=$REDIS_TAG"
    echo "PROXY_IMAGE=$NGINX_TAG"
}

force=0
case "${1:-}" in
    --print-env) print_env; exit 0 ;;
    --force) force=1 ;;
    "") ;;
    *) echo "usage: $0 [--force|--print-env]" >&2; exit 2 ;;
esac

log() { echo "local-images: $*" >&2; }

# The first Debian source apt uses for $SUITE main (one-line .list or deb822 .sources files).
apt_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v suite="$SUITE" '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        # deb822: blank-line separated stanzas; the URIs of one whose Suites list $SUITE and whose Types has deb
        awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" } {
                uri = ""; ok = 0; deb = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split($i, a, " "); uri = a[2] }
                    if ($i ~ /^Types:/ && $i ~ /(^|[ :])deb( |$)/) deb = 1
                    if ($i ~ /^Suites:/) { n = split($i, s, " "); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
                }
                if (ok && deb && uri != "") { print uri; exit } }' "$f"
    done
}

command -v docker >/dev/null || { log "docker is not installed (apt-get install docker.io)"; exit 1; }
docker info >/dev/null 2>&1 || { log "no Docker engine answers (start dockerd)"; exit 1; }

exists() { docker image inspect "$1" >/dev/null 2>&1; }

todo=()
for tag in "$PYTHON_TAG" "$REDIS_TAG" "$NGINX_TAG"; do
    if [ "$force" -eq 0 ] && exists "$tag"; then log "$tag exists, skipped"; else todo+=("$tag"); fi
done
[ ${#todo[@]} -gt 0 ] || exit 0

command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
[ "$(id -u)" -eq 0 ] || { log "debootstrap needs root"; exit 1; }
MIRROR=${DEBIAN_MIRROR:-$(apt_mirror | head -n 1)}
[ -n "$MIRROR" ] || { log "no $SUITE source in /etc/apt/sources.list*; set DEBIAN_MIRROR"; exit 1; }
mkdir -p "$CACHE/debootstrap"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rss-rootfs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Smaller images: no apt lists or caches, docs, man pages or locales (nothing in them runs apt).
slim() {
    local root=$1
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log \
        "$root"/tmp/* "$root"/root/.cache
    find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
}

# build TAG PACKAGES SETUP-FUNCTION [--change ...]: debootstrap, adjust, import.
build() {
    local tag=$1 packages=$2 setup=$3 root start
    shift 3
    root="$WORK/${tag//[:\/]/_}"
    start=$(date +%s)
    log "$tag: debootstrap $SUITE from $MIRROR (+$packages)"
    debootstrap --variant=minbase --include="$packages" --cache-dir="$CACHE/debootstrap" \
        "$SUITE" "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log" >&2; log "$tag: debootstrap failed"; exit 1; }
    "$setup" "$root"
    slim "$root"
    tar --numeric-owner -C "$root" -c . | docker import "$@" \
        --message "debootstrap $SUITE minbase +$packages (deploy/local-images.sh)" - "$tag" >/dev/null
    rm -rf "$root"
    log "$tag: built in $(( $(date +%s) - start )) s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

setup_python() { :; }

# As the official image: runs as the redis user in /data (a new named volume takes that owner); the
# compose file gives the password and the persistence flags on the command line.
setup_redis() {
    install -d -o "$(chroot "$1" id -u redis)" -g "$(chroot "$1" id -g redis)" "$1/data"
}

# As nginxinc/nginx-unprivileged: no root, pid and temp files in /tmp, logs to the container's
# output, and only conf.d/*.conf (where compose mounts deploy/nginx.conf): Debian's default site
# (sites-enabled/default, port 80, which an unprivileged user cannot bind) is removed.
setup_nginx() {
    local root=$1
    rm -f "$root"/etc/nginx/sites-enabled/* "$root"/etc/nginx/conf.d/*
    cat >"$root/etc/nginx/nginx.conf" <<'EOF'
# rss-local nginx (deploy/local-images.sh): unprivileged, like nginxinc/nginx-unprivileged.
worker_processes auto;
pid /tmp/nginx.pid;
error_log /dev/stderr notice;
include /etc/nginx/modules-enabled/*.conf;

events {
    worker_connections 1024;
}

http {
    client_body_temp_path /tmp/client_temp;
    proxy_temp_path /tmp/proxy_temp;
    fastcgi_temp_path /tmp/fastcgi_temp;
    uwsgi_temp_path /tmp/uwsgi_temp;
    scgi_temp_path /tmp/scgi_temp;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
EOF
    chown -R 33:33 "$root"/var/lib/nginx "$root"/var/log/nginx
}

for tag in "${todo[@]}"; do
    case "$tag" in
        "$PYTHON_TAG") build "$tag" python3,python3-venv,ca-certificates setup_python \
            --change 'CMD ["python3"]' ;;
        "$REDIS_TAG") build "$tag" redis-server setup_redis \
            --change 'USER redis' --change 'WORKDIR /data' --change 'EXPOSE 6379' \
            --change 'CMD ["redis-server"]' ;;
        "$NGINX_TAG") build "$tag" nginx setup_nginx \
            --change 'USER www-data' --change 'EXPOSE 8080' \
            --change 'CMD ["nginx", "-g", "daemon off;"]' ;;
    esac
done
