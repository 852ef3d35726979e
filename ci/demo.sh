#!/usr/bin/env bash
# The embedded default: installs what it needs, then runs `seaweed-rdma demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
SEAWEED_RDMA_RELEASE=1 bash ci/install.sh
exec .venv/bin/seaweed-rdma demo "$@"
