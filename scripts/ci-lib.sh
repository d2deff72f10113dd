# Sourced by .ci/run (and test/ci-run.test.ts): runs the test suite within
# CI's time bound and reruns only failed files with a known failure signature.
# Needs DEADLINE (epoch seconds) and CI_BOUND_S set; sets RESULTS and reruns.
RESULTS="${RESULTS:-$(mktemp -d)}"
failed=()
reruns=0
MAX_RERUNS="${MAX_RERUNS:-3}"

# Runs "$@" with the time left before DEADLINE; when that runs out, says which
# test file was running (from the events file $1) and returns 124.
bounded() {
  local events="$1"
  shift
  local left=$((DEADLINE - $(date +%s)))
  if [ "$left" -le 0 ]; then
    echo "== CI's time bound (${CI_BOUND_S} s) reached before: $*"
    return 124
  fi
  local rc=0
  timeout -k 30 "$left" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "== CI's time bound (${CI_BOUND_S} s) reached; the test file running was: $(node --import tsx scripts/ci-tests.ts running "$events")"
    return 124
  fi
  return "$rc"
}

# The README's test command on the Node first on PATH; then, for each failed
# file that matches a known signature, that file once more on its own.
run_suite() {
  local label="$1"
  local events="$RESULTS/node-$label.jsonl"
  local list="$RESULTS/node-$label.rerun"
  echo "== npm test on Node $label"
  local rc=0
  NOSEPAW_TEST_EVENTS="$events" bounded "$events" npm test || rc=$?
  [ "$rc" -eq 124 ] && return 1
  local verdict=0
  node --import tsx scripts/ci-tests.ts judge "$events" --rerun-list "$list" || verdict=$?
  if [ "$verdict" -eq 0 ]; then
    [ "$rc" -eq 0 ] && return 0
    echo "== npm test exited $rc though every test file passed"
    return 1
  fi
  [ "$verdict" -eq 3 ] || return 1
  local file signature
  while IFS=$'\t' read -r file signature; do
    reruns=$((reruns + 1))
    if [ "$reruns" -gt "$MAX_RERUNS" ]; then
      echo "== more than $MAX_RERUNS reruns in this CI run: too many to trust"
      return 1
    fi
    local again="$RESULTS/node-$label-rerun-$reruns.jsonl"
    echo "== rerun $reruns: $file on Node $label, once, on its own (it failed with known failure \"$signature\")"
    rc=0
    NOSEPAW_TEST_EVENTS="$again" bounded "$again" npm run --silent test:files -- "$file" || rc=$?
    verdict=0
    node --import tsx scripts/ci-tests.ts judge "$again" || verdict=$?
    if [ "$rc" -ne 0 ] || [ "$verdict" -ne 0 ]; then
      echo "== rerun $reruns: $file failed again on Node $label"
      return 1
    fi
  done <"$list"
  return 0
}

