#!/usr/bin/env bash
# The GitLab CI/CD component under gitlab-ci-local: templates/*.yml exactly as generated, included
# by examples/gitlab/.gitlab-ci.yml (only the component references replaced, see below), run on
# this host with the shell executor against a real `defsync serve` on 127.0.0.1, a local bare
# origin and a local release mirror, so each job downloads the release binary and checks it
# against SHA256SUMS, as on a shell runner.
#
#   bash .ci/gitlab.sh       (needs node and npm, git, curl, python3)
#
# gitlab-ci-local (npm) is installed, pinned, under the target directory, never globally.
# Scenarios: a triggered pull with the project and commit as pipeline variables, another with
# them as pipeline inputs, a push on the default branch, both no-op runs, a merge request dry
# run, and a conflict; each checks the dotenv, JSON, Code Quality and summary files (secret-free),
# the exit status, and the platform and the origin. DEFSYNC_GITLAB_KEEP=1 keeps the scratch
# folder (it is always kept after a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

# Pinned: 4.70.1 is the newest release that runs on Node 20 (later ones call Set.prototype.union,
# Node 22+). Relied on: `include: local:` with `inputs:`, spec:inputs defaults in the main file,
# --force-shell-executor, --variables-file, and artifacts copied back to the project directory.
GCL_VERSION=4.70.1
PROJECT=p1
GROUP_PROJECT=acme/integrations
RUN_TIMEOUT=180

started=$SECONDS
say() { printf '== gitlab-ci-local: %s\n' "$*"; }
fail() {
  printf '\ngitlab.sh: FAILED: %s\n' "$*" >&2
  exit 1
}
# gitlab-ci-local copies the project into its build folder with rsync.
if ! command -v rsync >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq rsync >/dev/null
fi
for tool in git curl python3 node npm rsync; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (apt-get install ${tool/npm/npm nodejs})"
done

# --- gitlab-ci-local -------------------------------------------------------------------------
target="${CARGO_TARGET_DIR:-$repo/target}"
gcl_dir="$target/gitlab-ci-local-$GCL_VERSION"
gcl="$gcl_dir/node_modules/.bin/gitlab-ci-local"
if [ ! -x "$gcl" ] || [ "$("$gcl" --version 2>/dev/null)" != "$GCL_VERSION" ]; then
  say "installing gitlab-ci-local@$GCL_VERSION from npm into $gcl_dir"
  mkdir -p "$gcl_dir"
  (cd "$gcl_dir" && npm install --no-audit --no-fund --no-save --silent "gitlab-ci-local@$GCL_VERSION") >/dev/null ||
    fail "npm install gitlab-ci-local@$GCL_VERSION failed"
  [ "$("$gcl" --version 2>/dev/null)" = "$GCL_VERSION" ] || fail "gitlab-ci-local $GCL_VERSION does not run here (node $(node --version))"
fi
say "using gitlab-ci-local $("$gcl" --version)"

# --- defsync and a scratch folder ------------------------------------------------------------
say "cargo build --locked"
cargo build --locked --quiet
bin="$target/debug/defsync"
[ -x "$bin" ] || fail "cargo build did not produce $bin"
version="$(awk '/^\[package\]/{p=1;next} /^\[/{p=0} p && $1=="version"{gsub(/[" ]/,"",$3); print $3; exit}' Cargo.toml)"

echo "== templates/ are what scripts/gen-action.py generates"
gen="$(mktemp -d)"
cp Cargo.toml "$gen/" && mkdir -p "$gen/scripts" && cp scripts/gen-action.py scripts/gitlab-job.sh "$gen/scripts/"
(cd "$gen" && python3 scripts/gen-action.py)
for f in templates/*.yml; do
  diff -u "$f" "$gen/$f" || fail "$f is stale: run python3 scripts/gen-action.py"
done
rm -rf "$gen"

work="$(mktemp -d "${TMPDIR:-/tmp}/defsync-gitlab.XXXXXX")"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ] || [ "${DEFSYNC_GITLAB_KEEP:-}" = 1 ]; then
    echo "gitlab.sh: the scratch folder is kept at $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf '[user]\n\tname = Fixture\n\temail = fixture@example.com\n[commit]\n\tgpgsign = false\n[init]\n\tdefaultBranch = main\n' >"$work/gitconfig"
# The jobs get no identity, as on a runner: defsync commits as itself.
printf '[init]\n\tdefaultBranch = main\n' >"$work/job-gitconfig"
export GIT_CONFIG_GLOBAL="$work/gitconfig" GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0

# --- the platform ----------------------------------------------------------------------------
key="gl-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
DEFSYNC_SERVER_KEYS="$key" "$bin" serve --listen 127.0.0.1:0 --store "$work/platform.db" \
  </dev/null >/dev/null 2>"$work/serve.log" &
pids+=($!)
wait_for_line() { # FILE PREFIX
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
dashboard() { DEFSYNC_PLATFORM="$platform" DEFSYNC_API_KEY="$key" DEFSYNC_PROJECT="$PROJECT" "$bin" dashboard "$@"; }
api() { curl -sS --fail-with-body --max-time 20 -H @"$work/auth" "$platform$1"; }
api_post() { curl -sS --fail-with-body --max-time 20 -H @"$work/auth" -H 'Content-Type: application/json' -d "$2" "$platform$1"; }
json_get() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); v=eval(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }
platform_head() { json_get "$(api "/v1/projects/$PROJECT")" '(d.get("head") or {}).get("seq", 0)'; }
platform_head_id() { json_get "$(api "/v1/projects/$PROJECT")" 'd["head"]["id"]'; }
platform_spec() { # KIND NAME
  local head digest
  head="$(platform_head_id)"
  digest="$(json_get "$(api "/v1/projects/$PROJECT/commits/$head/manifest")" \
    "next((e['digest'] for e in d['entries'] if (e['kind'], e['name']) == ('$1', '$2')), '')")"
  [ -n "$digest" ] || { echo "(no such definition)"; return; }
  json_get "$(api_post "/v1/projects/$PROJECT/objects/batch-get" "{\"digests\": [\"$digest\"]}")" \
    'json.dumps(d["objects"][0]["spec"], sort_keys=True)'
}
dashboard create-project --name "gitlab-ci-local end to end" >/dev/null 2>"$work/dashboard.log" ||
  fail "dashboard create-project failed: $(cat "$work/dashboard.log")"
read_key="$("$bin" serve keys create --store "$work/platform.db" --name mr-check --scope read --project "$PROJECT" 2>/dev/null)" ||
  fail "defsync serve keys create failed"

# --- the release mirror: what a shell runner downloads ---------------------------------------
case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) triple=x86_64-unknown-linux-musl ;;
  Linux/aarch64) triple=aarch64-unknown-linux-musl ;;
  *) fail "no release asset name for $(uname -s)/$(uname -m) (see scripts/gitlab-job.sh)" ;;
esac
mkdir -p "$work/mirror/v$version"
strip -o "$work/mirror/v$version/defsync-$triple" "$bin" 2>/dev/null || cp "$bin" "$work/mirror/v$version/defsync-$triple"
(cd "$work/mirror/v$version" && sha256sum "defsync-$triple" >SHA256SUMS)
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$work/mirror" </dev/null >"$work/mirror.log" 2>&1 &
pids+=($!)
mirror_port="$(wait_for_line "$work/mirror.log" "Serving HTTP on 127.0.0.1 port ")" ||
  fail "the release mirror did not start: $(tail -5 "$work/mirror.log")"
mirror="http://127.0.0.1:${mirror_port%% *}"
say "release mirror at $mirror"

# --- the user's project: a bare origin, and the clone gitlab-ci-local runs in -----------------
origin="$work/origin.git"
git init --quiet --bare "$origin"
home="$work/home"
git clone --quiet "$origin" "$home" 2>/dev/null
mkdir -p "$home/platform" "$home/.defsync-component/templates"
# The component is included with `include: local:` and the same inputs: gitlab-ci-local reads a
# `component:` only from the same project at the current commit, and the component project is not
# this one. The templates are copied as they are.
cp templates/*.yml "$home/.defsync-component/templates/"
sed -E 's#component: \$CI_SERVER_FQDN/<group>/defsync/([a-z]+)@[0-9.]+#local: /.defsync-component/templates/\1.yml#' \
  examples/gitlab/.gitlab-ci.yml >"$home/.gitlab-ci.yml"
grep -q 'component:' "$home/.gitlab-ci.yml" && fail "examples/gitlab/.gitlab-ci.yml has a component reference this script does not map"
# The pipeline-inputs form: what GitLab makes of a trigger's inputs[project-id], inputs[commit-id]
# is the main file's inputs with those values; gitlab-ci-local takes no pipeline inputs, so they
# stand in for the defaults in a copy, written per run below.
printf '# integrations\n' >"$home/README.md"
printf 'Definitions synced with the platform by defsync.\n' >"$home/platform/README.txt"
printf 'defsync-reports/\n.gitlab-ci-local/\n.gitlab-ci-local-variables.yml\n' >"$home/.gitignore"
git -C "$home" add -A
git -C "$home" commit --quiet -m "Add the defsync pipeline"
git -C "$home" push --quiet origin main
git -C "$home" remote set-head origin main
dev="$work/dev"
git clone --quiet "$origin" "$dev"
origin_main() { git -C "$origin" rev-parse refs/heads/main; }

# CI/CD variables of the project: a file, so that no key is on a command line. gitlab-ci-local
# reads --variables-file relative to the project, so the default name in the project is used
# (ignored by Git, like the reports).
vars_file="$home/.gitlab-ci-local-variables.yml"
write_vars() { # [PROJECT]: the project's DEFSYNC_PROJECT_ID, as set under Settings > CI/CD
  # YAML: every value here is a plain token or URL, quoted.
  {
    printf -- '---\n'
    printf "DEFSYNC_PLATFORM_URL: '%s'\n" "$platform"
    printf "DEFSYNC_API_KEY: '%s'\n" "$key"
    printf "DEFSYNC_READ_API_KEY: '%s'\n" "$read_key"
    printf "DEFSYNC_DOWNLOAD_BASE: '%s'\n" "$mirror"
    if [ -n "${1:-}" ]; then printf "DEFSYNC_PROJECT_ID: '%s'\n" "$1"; fi
  } >"$vars_file"
  chmod 600 "$vars_file"
}
write_vars

# run_job NAME JOB CONFIG [--variable K=V ...]: runs one job of CONFIG (a file in $home) on the
# branch checked out in $home; leaves the log, the report files and the exit status in
# $work/runs/NAME.
run_job() {
  local name="$1" job="$2" config="$3" dir rc=0
  shift 3
  dir="$work/runs/$name"
  mkdir -p "$dir"
  rm -rf "$home/defsync-reports" "$home/.gitlab-ci-local"
  say "$name: $job ($config) $*"
  # GITLAB_CI: gitlab-ci-local sets it to false (so pipelines can tell a local run); a runner
  # sets true, and the job must see what a runner gives it.
  (cd "$home" && timeout --kill-after=10 "$RUN_TIMEOUT" env -i \
    PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 TMPDIR="${TMPDIR:-/tmp}" \
    GIT_CONFIG_GLOBAL="$work/job-gitconfig" GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0 \
    "$gcl" "$job" --file "$config" --force-shell-executor --no-color \
    --evaluate-rule-changes=false --home "$work/gcl-home" \
    --variable GITLAB_CI=true --variable CI_PROJECT_PATH="$GROUP_PROJECT" \
    --variable CI_SERVER_HOST=gitlab.example.com \
    --variable CI_JOB_URL=https://gitlab.example.com/$GROUP_PROJECT/-/jobs/1 \
    --ignore-predefined-vars GITLAB_CI,CI_PROJECT_PATH,CI_SERVER_HOST,CI_JOB_URL,CI_PIPELINE_SOURCE,CI_COMMIT_BRANCH \
    "$@" </dev/null >"$dir/job.log" 2>&1) || rc=$?
  echo "$rc" >"$dir/rc"
  if [ -d "$home/defsync-reports" ]; then cp -r "$home/defsync-reports" "$dir/reports"; fi
  CURRENT="$name"
}

CURRENT=""
failures=()
shown=""
run_dir() { printf '%s\n' "$work/runs/$CURRENT"; }
failed() {
  local dir
  dir="$(run_dir)"
  if [ "$shown" != "$CURRENT" ]; then
    shown="$CURRENT"
    {
      printf '\n--- %s: the last lines of the job log (%s/job.log)\n' "$CURRENT" "$dir"
      tail -40 "$dir/job.log"
      printf -- '--- defsync serve (last lines)\n'
      tail -5 "$work/serve.log"
    } >&2
  fi
  printf 'gitlab.sh: FAILED: %s: %s\n' "$CURRENT" "$*" >&2
  failures+=("$CURRENT: $*")
}
expect_eq() { [ "$2" = "$3" ] || failed "$1 is '$2', expected '$3'"; }
expect_exit() { # 0 or failure
  local rc
  rc="$(cat "$(run_dir)/rc")"
  [ "$rc" != 124 ] && [ "$rc" != 137 ] || failed "gitlab-ci-local did not finish in time (exit $rc)"
  if [ "$1" = 0 ]; then
    [ "$rc" = 0 ] || failed "gitlab-ci-local exited $rc, expected success"
  else
    [ "$rc" != 0 ] || failed "gitlab-ci-local exited 0, expected the job to fail"
  fi
}
report() { printf '%s\n' "$(run_dir)/reports/$1"; }
dotenv() { sed -n "s/^$1=//p" "$(report defsync.env)" 2>/dev/null | tail -1; }
expect_dotenv() { expect_eq "dotenv $1" "$(dotenv "$1")" "$2"; }
# The four files exist, in GitLab's formats, and hold no key.
expect_reports() {
  local f
  for f in defsync.env defsync-report.json gl-code-quality-report.json defsync-summary.md; do
    [ -s "$(report "$f")" ] || { failed "no $f in the job's artifacts"; return; }
    if grep -qF -e "$key" -e "$read_key" "$(report "$f")"; then failed "$f holds an API key"; fi
  done
  grep -qF -e "$key" -e "$read_key" "$(run_dir)/job.log" && failed "the job log holds an API key"
  python3 - "$(report defsync.env)" "$(report gl-code-quality-report.json)" "$(report defsync-report.json)" <<'EOF' || failed "a report breaks GitLab's format (above)"
import json, re, sys
env, cq, rep = sys.argv[1:4]
text = open(env, encoding="utf-8").read()
assert len(text.encode()) <= 5 * 1024, "dotenv over 5 KB"
for line in text.splitlines():
    assert line and not line.startswith("#"), f"dotenv line {line!r}"
    assert re.fullmatch(r"[A-Za-z0-9_]+=[^\s\"']*", line), f"dotenv line {line!r}"
findings = json.load(open(cq, encoding="utf-8"))
assert isinstance(findings, list)
for f in findings:
    for k in ("description", "check_name", "fingerprint", "severity"):
        assert isinstance(f.get(k), str) and f[k], f"codequality {k} in {f}"
    assert f["severity"] in ("info", "minor", "major", "critical", "blocker"), f
    assert isinstance(f["location"]["path"], str) and isinstance(f["location"]["lines"]["begin"], int), f
json.load(open(rep, encoding="utf-8"))
EOF
}
expect_summary() { grep -qF -- "$1" "$(report defsync-summary.md)" 2>/dev/null || failed "the summary does not contain '$1'"; }
expect_log() { grep -qF -- "$1" "$(run_dir)/job.log" || failed "the job log does not contain '$1'"; }
codequality_count() { python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$(report gl-code-quality-report.json)" 2>/dev/null || echo "?"; }

def() { printf 'kind: workflow\nname: %s\nspec:\n  channel: "#sales"\n  retries: %s\n' "$1" "$2"; }
dev_commit() {
  git -C "$dev" add -A
  git -C "$dev" commit --quiet -m "$1"
  git -C "$dev" push --quiet origin HEAD:main
}
home_sync() { git -C "$home" fetch --quiet origin && git -C "$home" checkout --quiet main && git -C "$home" reset --quiet --hard origin/main; }
trigger_vars() { printf "DEFSYNC_PROJECT_ID: '%s'\nDEFSYNC_COMMIT_ID: '%s'\n" "$1" "$2" >>"$vars_file"; }

# --- 1. a triggered pull: the project and commit as pipeline variables -----------------------
def notify-on-deal 3 >"$work/notify.yaml"
dashboard put -m "Edit notify-on-deal in the dashboard" "$work/notify.yaml" >/dev/null 2>"$work/dashboard.log" ||
  fail "dashboard put failed: $(cat "$work/dashboard.log")"
commit_id="$(platform_head_id)"
seq_before="$(platform_head)"
main_before="$(origin_main)"
home_sync
write_vars && trigger_vars "$PROJECT" "$commit_id"
run_job trigger-pull-variables defsync-pull .gitlab-ci.yml --variable CI_PIPELINE_SOURCE=trigger
expect_exit 0
expect_reports
expect_log "downloaded defsync-$triple of release v$version"
# gitlab-ci-local parses the section markers and prints "<name> took <time>" for each.
grep -qE 'defsync_0_defsync_pull took [0-9]' "$(run_dir)/job.log" || failed "the job log has no collapsible section defsync_0_defsync_pull"
expect_dotenv DEFSYNC_STATUS changed
expect_dotenv DEFSYNC_CHANGED true
expect_dotenv DEFSYNC_PLATFORM_COMMIT "$commit_id"
[ "$(origin_main)" != "$main_before" ] || failed "origin/main did not move"
expect_dotenv DEFSYNC_GIT_COMMIT "$(origin_main)"
git -C "$origin" show refs/heads/main:platform/workflow/notify-on-deal.yaml 2>/dev/null | grep -q 'retries: 3' ||
  failed "origin/main has no platform/workflow/notify-on-deal.yaml with the dashboard's edit"
expect_eq "the pull commit's committer" "$(git -C "$origin" log -1 --format='%cn <%ce>' refs/heads/main)" "defsync (GitLab CI) <noreply@gitlab.example.com>"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"
expect_eq "the link's Git commit" "$(json_get "$(api "/v1/projects/$PROJECT")" 'd["sync"]["git_commit"]')" "$(origin_main)"
expect_summary "notify-on-deal"
expect_summary "$commit_id"
expect_summary "[View this job](https://gitlab.example.com/$GROUP_PROJECT/-/jobs/1)"

# --- 2. a triggered pull: the project and commit as pipeline inputs --------------------------
def escalate 1 >"$work/escalate.yaml"
dashboard put -m "Add escalate" "$work/escalate.yaml" >/dev/null 2>"$work/dashboard.log" ||
  fail "dashboard put failed: $(cat "$work/dashboard.log")"
commit_id="$(platform_head_id)"
main_before="$(origin_main)"
home_sync
write_vars # no DEFSYNC_PROJECT_ID: the inputs alone name the project
python3 - "$home/.gitlab-ci.yml" "$home/inputs.gitlab-ci.yml" "$PROJECT" "$commit_id" <<'EOF'
import re, sys
src, dst, project, commit = sys.argv[1:5]
text = open(src).read()
for name, value in (("project-id", project), ("commit-id", commit)):
    text, n = re.subn(r'(\n    %s:\n(?:      .*\n)*?      default: )""' % name, r'\g<1>"%s"' % value, text, count=1)
    assert n == 1, f"no default for the pipeline input {name}"
open(dst, "w").write(text)
EOF
run_job trigger-pull-inputs defsync-pull inputs.gitlab-ci.yml --variable CI_PIPELINE_SOURCE=trigger
rm -f "$home/inputs.gitlab-ci.yml"
expect_exit 0
expect_reports
expect_dotenv DEFSYNC_STATUS changed
expect_dotenv DEFSYNC_PLATFORM_COMMIT "$commit_id"
expect_dotenv DEFSYNC_ADDED 1
git -C "$origin" cat-file -e refs/heads/main:platform/workflow/escalate.yaml 2>/dev/null ||
  failed "origin/main has no platform/workflow/escalate.yaml"
expect_eq "the pull's report: requested commit" \
  "$(json_get "$(cat "$(report defsync-report.json)" 2>/dev/null || echo '{}')" 'd.get("requested_commit")')" "$commit_id"

# --- 3. a push on the default branch ----------------------------------------------------------
git -C "$dev" pull --quiet --ff-only origin main
def notify-on-deal 5 >"$dev/platform/workflow/notify-on-deal.yaml"
def follow-up 2 >"$dev/platform/workflow/follow-up.yaml"
dev_commit "Retry more, and follow up"
after="$(origin_main)"
seq_before="$(platform_head)"
home_sync
write_vars "$PROJECT"
run_job push-main defsync-push .gitlab-ci.yml --variable CI_PIPELINE_SOURCE=push
expect_exit 0
expect_reports
expect_dotenv DEFSYNC_STATUS changed
expect_dotenv DEFSYNC_GIT_COMMIT "$after"
head_json="$(api "/v1/projects/$PROJECT")"
expect_eq "platform head seq" "$(json_get "$head_json" 'd["head"]["seq"]')" "$((seq_before + 1))"
expect_eq "the platform commit's Git commit" "$(json_get "$head_json" 'd["head"]["origin"]["git_commit"]')" "$after"
expect_eq "the platform commit's repository" "$(json_get "$head_json" 'd["head"]["origin"]["repository"]')" "$GROUP_PROJECT"
expect_dotenv DEFSYNC_PLATFORM_COMMIT "$(json_get "$head_json" 'd["head"]["id"]')"
expect_eq "notify-on-deal on the platform" "$(platform_spec workflow notify-on-deal)" '{"channel": "#sales", "retries": 5}'
expect_eq "follow-up on the platform" "$(platform_spec workflow follow-up)" '{"channel": "#sales", "retries": 2}'
expect_summary "follow-up"

# --- 4. both no-op runs -----------------------------------------------------------------------
seq_before="$(platform_head)"
main_before="$(origin_main)"
home_sync
write_vars && trigger_vars "$PROJECT" "$(platform_head_id)"
run_job noop-pull defsync-pull .gitlab-ci.yml --variable CI_PIPELINE_SOURCE=trigger
expect_exit 0
expect_reports
expect_dotenv DEFSYNC_STATUS in_sync
expect_dotenv DEFSYNC_CHANGED false
expect_eq "origin/main" "$(origin_main)" "$main_before"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"
write_vars "$PROJECT"
run_job noop-push defsync-push .gitlab-ci.yml --variable CI_PIPELINE_SOURCE=push
expect_exit 0
expect_reports
expect_dotenv DEFSYNC_STATUS in_sync
expect_dotenv DEFSYNC_CHANGED false
expect_eq "codequality findings" "$(codequality_count)" 0
expect_eq "origin/main" "$(origin_main)" "$main_before"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"

# --- 5. a merge request dry run, with the read-only key ---------------------------------------
git -C "$dev" switch --quiet -c feature/retries
def follow-up 4 >"$dev/platform/workflow/follow-up.yaml"
git -C "$dev" commit --quiet -am "Follow up after 4 retries"
git -C "$dev" push --quiet origin feature/retries
git -C "$dev" switch --quiet main
git -C "$home" fetch --quiet origin
git -C "$home" checkout --quiet -B feature/retries origin/feature/retries
write_vars "$PROJECT"
run_job mr-check defsync-check .gitlab-ci.yml \
  --variable CI_PIPELINE_SOURCE=merge_request_event --unset-variable CI_COMMIT_BRANCH \
  --variable CI_MERGE_REQUEST_SOURCE_BRANCH_NAME=feature/retries --variable CI_MERGE_REQUEST_TARGET_BRANCH_NAME=main \
  --variable CI_MERGE_REQUEST_IID=7
expect_exit 0
expect_reports
expect_dotenv DEFSYNC_STATUS dry_run
expect_dotenv DEFSYNC_CHANGED false
expect_dotenv DEFSYNC_UPDATED 1
expect_summary "follow-up"
expect_summary "feature/retries"
expect_eq "origin/main" "$(origin_main)" "$main_before"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"
expect_eq "follow-up on the platform" "$(platform_spec workflow follow-up)" '{"channel": "#sales", "retries": 2}'
# The check read the platform with the read-only key its api-key-variable input names.
grep -q 'key=mr-check' "$work/serve.log" || failed "the merge request check did not use the read-only key (DEFSYNC_READ_API_KEY)"

# --- 6. a conflict: both sides edit one definition --------------------------------------------
def notify-on-deal 7 >"$work/notify.yaml"
dashboard put -m "Seven retries" "$work/notify.yaml" >/dev/null 2>"$work/dashboard.log" ||
  fail "dashboard put failed: $(cat "$work/dashboard.log")"
git -C "$dev" pull --quiet --ff-only origin main
def notify-on-deal 9 >"$dev/platform/workflow/notify-on-deal.yaml"
dev_commit "Nine retries"
after="$(origin_main)"
seq_before="$(platform_head)"
base_before="$(api "/v1/projects/$PROJECT/sync/base")"
home_sync
write_vars "$PROJECT"
run_job conflict-push defsync-push .gitlab-ci.yml --variable CI_PIPELINE_SOURCE=push
expect_exit failure
expect_reports
expect_dotenv DEFSYNC_STATUS conflict
expect_dotenv DEFSYNC_CONFLICTS 1
expect_eq "codequality findings" "$(codequality_count)" 1
grep -qF '"path": "platform/workflow/notify-on-deal.yaml"' "$(report gl-code-quality-report.json)" 2>/dev/null ||
  failed "the Code Quality finding is not on platform/workflow/notify-on-deal.yaml"
expect_summary "retries: 7"
expect_summary "retries: 9"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"
expect_eq "the platform's base" "$(api "/v1/projects/$PROJECT/sync/base")" "$base_before"
expect_eq "notify-on-deal on the platform" "$(platform_spec workflow notify-on-deal)" '{"channel": "#sales", "retries": 7}'
expect_eq "origin/main" "$(origin_main)" "$after"
write_vars && trigger_vars "$PROJECT" "$(platform_head_id)"
run_job conflict-pull defsync-pull .gitlab-ci.yml --variable CI_PIPELINE_SOURCE=trigger
expect_exit failure
expect_reports
expect_dotenv DEFSYNC_STATUS conflict
expect_summary "retries: 7"
expect_summary "retries: 9"
expect_eq "platform head seq" "$(platform_head)" "$seq_before"
expect_eq "origin/main" "$(origin_main)" "$after"

if [ ${#failures[@]} -gt 0 ]; then
  printf '\ngitlab.sh: %d check(s) failed (%ss):\n' "${#failures[@]}" "$((SECONDS - started))" >&2
  printf '  %s\n' "${failures[@]}" >&2
  exit 1
fi
say "all scenarios passed in $((SECONDS - started))s"
