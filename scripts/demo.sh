#!/usr/bin/env bash
# kq's main job end to end: starts a local Apache Kafka (fetched with Maven on
# first use), enqueues a mix of jobs, runs a worker and prints every outcome.
source "$(dirname "$0")/_venv.sh"
exec python -m kq.demo "$@"
