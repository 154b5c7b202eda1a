#!/bin/sh
# The standard scale run: Cluster API's 2,000-cluster scale test on Capstan, at the
# defaults of `capstan simulate` (1 control-plane machine and 1 worker per cluster, at
# most 50 clusters in flight, time scale 0.1 of the in-memory quick-start durations).
# Its report goes to bench/results/scale-<N>/ (results.json, report.md, plots).
#
#   sh bench/scale.sh            # 2,000 clusters
#   CLUSTERS=10000 sh bench/scale.sh
#
# Run on a quiet machine: the figures are the machine's, stated in report.md.
set -eu
cd "$(dirname "$0")/.."
CLUSTERS="${CLUSTERS:-2000}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="bench/results/scale-${CLUSTERS}"
make capi-plugins
cargo build --release -p capstan
mkdir -p "$OUT"
# Extra flags pass through, e.g. `sh bench/scale.sh --compare old/results.json`.
exec "$TARGET_DIR/release/capstan" simulate \
	--clusters "$CLUSTERS" \
	--plugins "$TARGET_DIR/plugins/capi" \
	--out "$OUT" \
	--metrics-bind-address 0 \
	--progress lines \
	"$@"
