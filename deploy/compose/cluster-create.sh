#!/bin/sh
# Joins the three Valkey nodes of deploy/compose.yaml into one cluster of three primaries, once:
# run again (every `docker compose up`), it finds the cluster formed and leaves it alone.
set -eu
NODES="redis-1:6379 redis-2:6379 redis-3:6379"
if valkey-cli -h redis-1 cluster info | grep -q 'cluster_state:ok'; then
    echo "the cluster is formed"
    exit 0
fi
# shellcheck disable=SC2086 - NODES is a list of words
valkey-cli --cluster create $NODES --cluster-replicas 0 --cluster-yes
tries=0
until valkey-cli -h redis-1 cluster info | grep -q 'cluster_state:ok'; do
    tries=$((tries + 1))
    if [ "$tries" -gt 60 ]; then
        echo "the cluster did not reach cluster_state:ok in 60 s" >&2
        exit 1
    fi
    sleep 1
done
echo "the cluster is formed"
