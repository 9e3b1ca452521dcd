#!/usr/bin/env bash
# The job a fork's CI runs (.github/workflows/pipeline.yml, .gitlab-ci.yml): configure the DVC remote, reproduce
# what changed and pull the rest, write the metric/param changes against the base revision as Markdown, render the
# plot changes as HTML, and (on main) push the DVC cache. Run it locally the same way; it never commits.
#
# Environment (all optional):
#   DVC_REMOTE_URL      remote to pull from / push to (added as the default remote `ci` in .dvc/config.local)
#   DVC_REMOTE_OPTIONS  extra `key=value` settings of that remote, one per line or space-separated
#                       (e.g. "endpointurl=https://minio:9000"); cloud credentials come from their usual variables
#   CI_BASE_REF         the revision to compare with (a PR's target branch, e.g. origin/main); default HEAD
#   CI_PUSH             1: `dvc push` at the end (CI sets it on main only)
#   CI_OUT              folder for repro.log, stages_run.txt, summary.md, plots/ (default ci-out)
#   GITHUB_STEP_SUMMARY the summary is appended there too when set (GitHub Actions sets it)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
BASE="${CI_BASE_REF:-HEAD}"
OUT="${CI_OUT:-ci-out}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
: >"$SUMMARY"
export DVC_NO_ANALYTICS=1

if [ -n "${DVC_REMOTE_URL:-}" ]; then
  dvc remote add --local --force --default ci "$DVC_REMOTE_URL"
  for kv in ${DVC_REMOTE_OPTIONS:-}; do
    dvc remote modify --local ci "${kv%%=*}" "${kv#*=}"
  done
fi

dvc repro --pull --allow-missing 2>&1 | tee "$OUT/repro.log"
grep -oE "Running stage '[^']+'" "$OUT/repro.log" | sed -E "s/Running stage '(.*)'/\1/" | sort -u \
  >"$OUT/stages_run.txt" || true

section() { printf '\n### %s\n\n' "$1" >>"$SUMMARY"; }
{
  echo "## drivepipe pipeline"
  echo
  if [ -s "$OUT/stages_run.txt" ]; then
    echo "Reproduced: $(paste -sd' ' "$OUT/stages_run.txt" | sed 's/ /, /g'); everything else was pulled from the DVC remote."
  else
    echo "Reproduced: nothing (every output was pulled from the DVC remote or already up to date)."
  fi
} >>"$SUMMARY"
# A Markdown table with rows, or "none" (dvc prints just the header when nothing changed).
table_or_none() { if [ "$(grep -c '^|' "$1" || true)" -gt 2 ]; then cat "$1"; else echo "none"; fi; }
section "Params changed vs \`$BASE\`"
dvc params diff "$BASE" --md >"$OUT/params_diff.md" || true
table_or_none "$OUT/params_diff.md" >>"$SUMMARY"
section "Metrics changed vs \`$BASE\`"
dvc metrics diff "$BASE" --md >"$OUT/metrics_diff.md" || true
table_or_none "$OUT/metrics_diff.md" >>"$SUMMARY"

# --- HOOK: significance comparison -------------------------------------------------------------------------------
# `drivepipe compare A B` (headline metrics of two revisions with 95 % bootstrap intervals and a noise verdict) is
# being added in parallel; when the installed drivepipe has it, its table goes into the summary. Check its arguments
# here if its interface changes.
if python -m drivepipe.cli.main compare --help >/dev/null 2>&1; then
  section "Significance vs \`$BASE\` (drivepipe compare)"
  { echo '```'; python -m drivepipe.cli.main compare "$BASE" workspace 2>&1 || echo "(compare failed)"; echo '```'; } \
    >>"$SUMMARY"
fi
# --- end HOOK ------------------------------------------------------------------------------------------------------

dvc plots diff "$BASE" -o "$OUT/plots" >/dev/null
echo "Plots: \`$OUT/plots/index.html\` (job artifact)." >>"$SUMMARY"

if [ "${CI_PUSH:-0}" = "1" ]; then
  dvc push
fi
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat "$SUMMARY" >>"$GITHUB_STEP_SUMMARY"; fi
cat "$SUMMARY"
