#!/usr/bin/env bash
# Spark GPU discovery for executors: prints {"name": "gpu", "addresses": ["0", "1", ...]}.
# No nvidia-smi (or no GPU) yields an empty list, so Spark reports the shortfall itself.
set -u
ids=""
if command -v nvidia-smi >/dev/null 2>&1; then
  ids=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr -d ' ' | grep -E '^[0-9]+$' | sed 's/.*/"&"/' | paste -sd, -)
fi
echo "{\"name\": \"gpu\", \"addresses\": [${ids}]}"
