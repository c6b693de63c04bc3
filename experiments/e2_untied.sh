#!/usr/bin/env bash
# The untied-embeddings E2 (pre-registration: experiments/README.md, 2026-12-03 third session):
#   nice -n 10 experiments/e2_untied.sh > runs/e2_untied.log 2>&1
exec "$(dirname "$0")/e2_variant.sh" untied model.tie_embeddings=false
