#!/usr/bin/env bash
# The untied-embeddings E2 (pre-registration: experiments/e2_untied.md):
#   nice -n 10 experiments/e2_untied.sh > runs/e2_untied.log 2>&1
exec "$(dirname "$0")/e2_variant.sh" untied model.tie_embeddings=false
