#!/usr/bin/env bash
# Installs the defsync binary for the GitHub Action (action.yml runs exactly this script).
#
#   install.sh resolve   pick a release for this runner, download it and verify its SHA-256
#                        against the release's SHA256SUMS; or, when no release matches the
#                        action's ref, print what the build step needs (mode=build, source-hash)
#   install.sh build     build from the action's own source with cargo (after the cache step)
#
# Every input arrives through the environment, never through the script text:
#   DEFSYNC_ACTION_DIR         the action's source (the repository root of defsync)
#   DEFSYNC_ACTION_REF         github.action_ref: v1, v1.2.3, a branch, a SHA, or empty (uses: ./)
#   DEFSYNC_ACTION_REPOSITORY  github.action_repository, e.g. acme/defsync
#   DEFSYNC_INSTALL_VERSION    the action's `version` input: a release such as 1.2.3 (optional)
#   DEFSYNC_DOWNLOAD_BASE      overrides <server>/<repository>/releases/download (tests, mirrors)
#   DEFSYNC_BUILD_DIR          where the build step keeps cargo's target dir and built binaries
#   RUNNER_OS, RUNNER_ARCH, RUNNER_TEMP, GITHUB_OUTPUT, GITHUB_SERVER_URL   set by the runner
#
# Portable to the bash of Linux, macOS (3.2) and Git Bash on Windows.
set -euo pipefail

die() {
  # One annotation; the text is ours, never an input, so it needs no escaping.
  echo "::error title=defsync install::$*"
  exit 1
}

note() { echo "defsync install: $*"; }

output() {
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    printf '%s=%s\n' "$1" "$2" >>"$GITHUB_OUTPUT"
  fi
  note "$1=$2"
}

# Checked once here, because sha256_of runs in subshells, where `die` could not end the script.
if command -v sha256sum >/dev/null 2>&1; then
  sha256_of() { sha256sum "$1" | awk '{print tolower($1)}'; }
elif command -v shasum >/dev/null 2>&1; then
  sha256_of() { shasum -a 256 "$1" | awk '{print tolower($1)}'; }
else
  die "neither sha256sum nor shasum is installed, so a download cannot be verified"
fi

# Git Bash hands us Windows paths (D:\a\_temp); bash and curl prefer /d/a/_temp.
unix_path() {
  if command -v cygpath >/dev/null 2>&1; then cygpath -u "$1"; else printf '%s\n' "$1"; fi
}

action_dir() {
  local dir="${DEFSYNC_ACTION_DIR:-}"
  [ -n "$dir" ] || dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  dir="$(unix_path "$dir")"
  (cd "$dir" && pwd)
}

# actions/cache is not bash: it wants D:\a\_temp on Windows.
native_path() {
  if command -v cygpath >/dev/null 2>&1; then cygpath -w "$1"; else printf '%s\n' "$1"; fi
}

temp_dir() {
  local t="${RUNNER_TEMP:-${TMPDIR:-/tmp}}"
  unix_path "$t"
}

# A new directory of our own under the temp dir: never a fixed name, which another user or an
# earlier step could have made (a symlink elsewhere, or a file we would then trust).
# Sets NEW_DIR; not meant for $(...), where `die` could not end the script.
new_dir() {
  NEW_DIR="$(mktemp -d "$(temp_dir)/defsync-$1.XXXXXXXX")" || die "cannot create a temporary directory under $(temp_dir)"
}

# The release asset name for this runner: a Rust target triple.
target_triple() {
  local os="${RUNNER_OS:-}" arch="${RUNNER_ARCH:-}"
  if [ -z "$os" ]; then
    case "$(uname -s)" in
      Linux) os=Linux ;;
      Darwin) os=macOS ;;
      MINGW* | MSYS* | CYGWIN*) os=Windows ;;
      *) os=unknown ;;
    esac
  fi
  if [ -z "$arch" ]; then
    case "$(uname -m)" in
      x86_64 | amd64) arch=X64 ;;
      aarch64 | arm64) arch=ARM64 ;;
      *) arch=unknown ;;
    esac
  fi
  case "$os/$arch" in
    Linux/X64) echo x86_64-unknown-linux-musl ;;
    Linux/ARM64) echo aarch64-unknown-linux-musl ;;
    macOS/X64) echo x86_64-apple-darwin ;;
    macOS/ARM64) echo aarch64-apple-darwin ;;
    Windows/X64) echo x86_64-pc-windows-msvc ;;
    *) echo "" ;;
  esac
}

exe_suffix() {
  case "$1" in *windows*) echo .exe ;; *) echo "" ;; esac
}

# The version in the action's Cargo.toml: the release that was cut from this source.
source_version() {
  awk '
    /^\[package\]/ { in_pkg = 1; next }
    /^\[/ { in_pkg = 0 }
    in_pkg && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }
  ' "$(action_dir)/Cargo.toml"
}

download_base() {
  if [ -n "${DEFSYNC_DOWNLOAD_BASE:-}" ]; then
    printf '%s\n' "${DEFSYNC_DOWNLOAD_BASE%/}"
  elif [ -n "${DEFSYNC_ACTION_REPOSITORY:-}" ]; then
    printf '%s/%s/releases/download\n' "${GITHUB_SERVER_URL:-https://github.com}" "$DEFSYNC_ACTION_REPOSITORY"
  fi
}

# fetch URL FILE: sets FETCH_STATUS to the HTTP status (000 when there was no answer); the body
# goes to FILE. Only https, except a loopback http:// base for tests. Redirects are followed
# (GitHub serves assets from another host), but only to https. Not run in a subshell, so that
# `die` ends the script.
fetch() {
  local url="$1" file="$2" proto
  command -v curl >/dev/null 2>&1 ||
    die "curl is not installed, and it is needed to download the defsync release: install curl on the runner (every GitHub-hosted runner has it), or build from source by using the action at a ref that has no release"
  case "$url" in
    https://*) proto='=https' ;;
    http://127.0.0.1[:/]* | http://localhost[:/]* | http://\[::1\][:/]*) proto='=http' ;;
    *) die "refusing to download over anything but https:// (the download base must be https, or http on 127.0.0.1 for tests)" ;;
  esac
  FETCH_STATUS="$(curl --silent --show-error --location --proto "$proto" --proto-redir '=https' \
    --retry 3 --retry-delay 2 --connect-timeout 20 --max-time 300 \
    --output "$file" --write-out '%{http_code}' "$url")" || FETCH_STATUS=000
}

# install_release TAG: downloads, verifies and installs one release, and sets INSTALLED to the
# binary; leaves INSTALLED empty when the release or its asset does not exist (404), so the
# caller can build instead. A checksum mismatch is never a reason to build: it ends the run.
install_release() {
  local tag="$1" triple base asset dir expected actual
  INSTALLED=""
  triple="$(target_triple)"
  [ -n "$triple" ] || return 0
  base="$(download_base)"
  [ -n "$base" ] || return 0
  asset="defsync-$triple$(exe_suffix "$triple")"
  new_dir "$tag"
  dir="$NEW_DIR"

  fetch "$base/$tag/SHA256SUMS" "$dir/SHA256SUMS"
  case "$FETCH_STATUS" in
    200) ;;
    404) return 0 ;;
    *) die "cannot download SHA256SUMS of release $tag (HTTP $FETCH_STATUS)" ;;
  esac
  # Lines are "<hex>  <name>" or "<hex> *<name>" (binary mode).
  expected="$(awk -v name="$asset" '$2 == name || $2 == "*" name { print tolower($1); exit }' "$dir/SHA256SUMS")"
  [ -n "$expected" ] || return 0
  case "$expected" in
    *[!0-9a-f]*) die "SHA256SUMS of release $tag has a malformed line for $asset" ;;
  esac
  [ "${#expected}" -eq 64 ] || die "SHA256SUMS of release $tag has a malformed line for $asset"

  fetch "$base/$tag/$asset" "$dir/download"
  case "$FETCH_STATUS" in
    200) ;;
    404) return 0 ;;
    *) die "cannot download $asset of release $tag (HTTP $FETCH_STATUS)" ;;
  esac
  actual="$(sha256_of "$dir/download")"
  if [ "$actual" != "$expected" ]; then
    rm -f "$dir/download"
    die "checksum mismatch for $asset of release $tag: SHA256SUMS says $expected, the download is $actual. The file was deleted, not run. Retry the job; if it fails again, report it to the defsync maintainers"
  fi
  mv "$dir/download" "$dir/defsync$(exe_suffix "$triple")"
  chmod +x "$dir/defsync$(exe_suffix "$triple")"
  INSTALLED="$dir/defsync$(exe_suffix "$triple")"
}

# A hash of everything cargo builds from, for the cache key and the built binary's name.
# The list goes through a pipe, so no file under the temp dir is involved.
source_hash() {
  local dir
  dir="$(action_dir)"
  (
    cd "$dir"
    for f in Cargo.toml Cargo.lock $(find src -type f | LC_ALL=C sort); do
      printf '%s\n' "$f"
      sha256_of "$f"
    done
  ) | sha256_of -
}

build_dir() {
  unix_path "${DEFSYNC_BUILD_DIR:-$(temp_dir)/defsync-build}"
}

resolve() {
  local ref="${DEFSYNC_ACTION_REF:-}" version="${DEFSYNC_INSTALL_VERSION:-}" tag="" strict=false bin src

  if [ -n "$version" ]; then
    # An explicit version must exist: falling back to a build would hide a typo.
    version="${version#v}"
    case "$version" in
      [0-9]*.[0-9]*.[0-9]*) ;;
      *) die "the version input must be a release such as 1.2.3" ;;
    esac
    case "$version" in *[!0-9A-Za-z.+-]*) die "the version input must be a release such as 1.2.3" ;; esac
    tag="v$version"
    strict=true
  else
    src="$(source_version)"
    case "$ref" in
      v[0-9]* )
        # uses: owner/defsync@v1 or @v1.2 or @v1.2.3: the source at that tag says which release
        # it is; the tag must agree with it, so a moved tag never picks another version's binary.
        case "$ref" in *[!0-9v.]*) ;; *)
          case "v$src." in "$ref".*) tag="v$src" ;; esac ;;
        esac
        ;;
      *)
        # A full commit SHA gets the release only when that release was built from this commit.
        if [ "${#ref}" -eq 40 ] && [ -n "$src" ] && ! printf '%s' "$ref" | grep -q '[^0-9a-f]'; then
          local dir
          new_dir source-commit
          dir="$NEW_DIR"
          if [ -n "$(download_base)" ]; then
            fetch "$(download_base)/v$src/SOURCE_COMMIT" "$dir/SOURCE_COMMIT"
            if [ "$FETCH_STATUS" = 200 ] && [ "$(tr -d ' \r\n' <"$dir/SOURCE_COMMIT")" = "$ref" ]; then
              tag="v$src"
            fi
          fi
        fi
        ;;
    esac
  fi

  if [ -n "$tag" ]; then
    install_release "$tag"
    bin="$INSTALLED"
    if [ -n "$bin" ]; then
      output mode download
      output version "$tag"
      output bin "$bin"
      "$bin" --version || die "the downloaded binary does not run on this runner"
      return
    fi
    if [ "$strict" = true ]; then
      die "release $tag has no binary for this runner ($(target_triple)) at $(download_base)/$tag"
    fi
    note "release $tag has no binary for this runner; building from source instead"
  else
    note "no release matches this action ref; building from source"
  fi

  output mode build
  output source-hash "$(source_hash)"
  output build-dir "$(native_path "$(build_dir)")"
}

build() {
  local dir hash out bin exe
  dir="$(action_dir)"
  hash="$(source_hash)"
  exe="$(case "${RUNNER_OS:-$(uname -s)}" in Windows | MINGW* | MSYS* | CYGWIN*) echo .exe ;; esac)"
  out="$(build_dir)/bin/$hash"
  bin="$out/defsync$exe"
  if [ -x "$bin" ]; then
    note "using the cached build of this source"
  else
    command -v cargo >/dev/null 2>&1 ||
      die "cargo is not installed, and it is needed to build defsync from source (the action ref has no release). Use a released version (uses: <owner>/defsync@v1), or install Rust first"
    cargo build --release --locked --manifest-path "$dir/Cargo.toml" --target-dir "$(build_dir)/target"
    mkdir -p "$out"
    cp "$(build_dir)/target/release/defsync$exe" "$bin"
    # Keep only this build, so the cache does not grow with every source change.
    for old in "$(build_dir)"/bin/*; do
      [ "$old" = "$out" ] || rm -rf "$old"
    done
  fi
  output bin "$bin"
  "$bin" --version
}

case "${1:-}" in
  resolve) resolve ;;
  build) build ;;
  *)
    echo "usage: install.sh resolve|build" >&2
    exit 2
    ;;
esac
