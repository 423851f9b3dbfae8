#!/usr/bin/env bash
# The checkout stand-in's one step: the Git commands actions/checkout v4 runs, against the local
# bare origin ACT_STANDIN_ORIGIN instead of GitHub. For a branch it fetches the event's commit
# and checks the branch out at it (-B); for any other ref (refs/pull/N/merge) it checks out the
# fetched commit detached, as GitHub's runner does.
set -euo pipefail

fail() {
  echo "::error title=checkout stand-in::$*"
  exit 1
}

origin="${ACT_STANDIN_ORIGIN:-}"
[ -n "$origin" ] && [ -d "$origin" ] || fail "ACT_STANDIN_ORIGIN must name the local bare origin (pass it with act --env)"
[ "$INPUT_REPOSITORY" = "$EVENT_REPOSITORY" ] ||
  fail "only the workflow's own repository ($EVENT_REPOSITORY) can be checked out here, not $INPUT_REPOSITORY"
case "$INPUT_PERSIST_CREDENTIALS" in true | false) ;; *) fail "persist-credentials must be true or false" ;; esac
case "$INPUT_FETCH_DEPTH" in '' | *[!0-9]*) fail "fetch-depth must be a number" ;; esac

ref="${INPUT_REF:-$EVENT_REF}"
sha=""
[ -n "$INPUT_REF" ] || sha="$EVENT_SHA"
case "$ref" in
  refs/heads/*) branch="${ref#refs/heads/}" tracking="refs/remotes/origin/${ref#refs/heads/}" ;;
  refs/pull/*) branch="" tracking="refs/remotes/pull/${ref#refs/pull/}" ;;
  refs/tags/*) branch="" tracking="$ref" ;;
  *) fail "cannot check out '$ref': give a full ref (refs/heads/..., refs/pull/..., refs/tags/...)" ;;
esac
# On pull_request events act takes github.sha from its own work tree, not the merge commit, so
# the stand-in fetches those refs by name, as GitHub's merge ref is what checkout fetches.
case "$ref" in refs/heads/*) ;; *) sha="" ;; esac

dir="$GITHUB_WORKSPACE${INPUT_PATH:+/$INPUT_PATH}"
mkdir -p "$dir"
cd "$dir"
# actions/checkout empties the folder when it is not already this repository.
find . -mindepth 1 -maxdepth 1 -exec rm -rf {} +

depth=()
[ "$INPUT_FETCH_DEPTH" = 0 ] || depth=(--depth="$INPUT_FETCH_DEPTH")
git init --quiet
git config --local gc.auto 0
# file:// so that --depth is honoured (git ignores it for plain local paths).
git remote add origin "file://$origin"
if [ "$INPUT_PERSIST_CREDENTIALS" = true ]; then
  # actions/checkout stores the token as an extra header for the server. The token is written
  # into the file by bash itself, never passed as an argument, as checkout writes it too.
  git config --local "http.$SERVER_URL/.extraheader" "AUTHORIZATION: basic PLACEHOLDER"
  basic="$(printf 'x-access-token:%s' "$INPUT_TOKEN" | base64 | tr -d '\n')"
  echo "::add-mask::$basic"
  config="$(<.git/config)"
  printf '%s\n' "${config/PLACEHOLDER/$basic}" >.git/config
fi
git -c protocol.version=2 fetch --quiet --no-tags --prune "${depth[@]}" origin "+${sha:-$ref}:$tracking"
if [ -n "$branch" ]; then
  git checkout --quiet --force -B "$branch" "$tracking"
else
  git checkout --quiet --force --detach "$tracking"
fi
echo "checkout stand-in: $ref at $(git rev-parse HEAD) (fetch-depth $INPUT_FETCH_DEPTH, persist-credentials $INPUT_PERSIST_CREDENTIALS)"
