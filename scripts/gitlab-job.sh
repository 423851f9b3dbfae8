# The defsync job of the GitLab CI/CD component. scripts/gen-action.py copies this text into the
# `script:` of every template under templates/, since an included component brings no files into
# the job: edit it here, then run `python3 scripts/gen-action.py`.
#
# POSIX sh: it runs in the image's busybox sh as well as on a shell runner. Every input arrives as
# a variable that the template sets from `$[[ inputs.* ]]`; no input is part of this text:
#   DEFSYNC_JOB_COMMAND        pull, push or status (fixed by the template)
#   DEFSYNC_API_KEY_VARIABLE   the name of the CI/CD variable that holds the platform API key
#   DEFSYNC_INSTALL            auto (the image's defsync when its version matches, else the
#                              release), image (never download) or release (always download)
#   DEFSYNC_INSTALL_VERSION    the release: 1.2.3
#   DEFSYNC_DOWNLOAD_BASE      where releases are: <base>/v1.2.3/SHA256SUMS and the binaries
#   DEFSYNC_*                  the binary's own options (empty ones are unset: "" is no default)
set -eu

defsync_die() {
  printf 'defsync job: error: %s\n' "$*" >&2
  exit 1
}

defsync_command="${DEFSYNC_JOB_COMMAND:-}"
case "$defsync_command" in
  pull | push | status) ;;
  *) defsync_die "DEFSYNC_JOB_COMMAND must be pull, push or status; the template sets it" ;;
esac

# The API key, from the CI/CD variable named by the api-key-variable input; its value is never
# printed. A protected variable is not set in pipelines of unprotected branches.
defsync_key_var="${DEFSYNC_API_KEY_VARIABLE:-DEFSYNC_API_KEY}"
case "$defsync_key_var" in
  "" | [0-9]* | *[!A-Za-z0-9_]*) defsync_die "the api-key-variable input must be a CI/CD variable name, such as DEFSYNC_API_KEY" ;;
esac
defsync_key="$(printenv "$defsync_key_var" || true)"
[ -n "$defsync_key" ] ||
  defsync_die "the CI/CD variable $defsync_key_var is not set or empty: add it under Settings > CI/CD > Variables (masked; protected variables reach protected branches only)"
DEFSYNC_API_KEY="$defsync_key"
export DEFSYNC_API_KEY
unset defsync_key

# An unset input arrives as "", which the binary would take as a value.
for defsync_name in $(env | sed -n 's/^\(DEFSYNC_[A-Za-z0-9_]*\)=$/\1/p'); do
  unset "$defsync_name"
done

defsync_version="${DEFSYNC_INSTALL_VERSION:-}"
defsync_version="${defsync_version#v}"
case "$defsync_version" in
  [0-9]*.[0-9]*.[0-9]*) ;;
  *) defsync_die "the version input must be a release such as 1.2.3" ;;
esac
case "$defsync_version" in *[!0-9A-Za-z.+-]*) defsync_die "the version input must be a release such as 1.2.3" ;; esac

defsync_bin=""
defsync_install="${DEFSYNC_INSTALL:-auto}"
case "$defsync_install" in
  auto | image)
    if command -v defsync >/dev/null 2>&1; then
      defsync_have="$(defsync --version 2>/dev/null | awk '{print $2}')"
      if [ "$defsync_have" = "$defsync_version" ]; then
        defsync_bin="$(command -v defsync)"
      elif [ "$defsync_install" = image ]; then
        defsync_die "the image's defsync is $defsync_have, not $defsync_version: set the image and version inputs to one release"
      fi
    elif [ "$defsync_install" = image ]; then
      defsync_die "defsync is not on PATH: run the job in the defsync image, or set the install input to release"
    fi
    ;;
  release) ;;
  *) defsync_die "the install input must be auto, image or release" ;;
esac

if [ -z "$defsync_bin" ]; then
  # A shell runner: download the release binary and check it against the release's SHA256SUMS.
  case "$(uname -s)/$(uname -m)" in
    Linux/x86_64 | Linux/amd64) defsync_asset=defsync-x86_64-unknown-linux-musl ;;
    Linux/aarch64 | Linux/arm64) defsync_asset=defsync-aarch64-unknown-linux-musl ;;
    Darwin/x86_64) defsync_asset=defsync-x86_64-apple-darwin ;;
    Darwin/arm64) defsync_asset=defsync-aarch64-apple-darwin ;;
    *) defsync_die "no defsync release binary for $(uname -s)/$(uname -m): run the job in the defsync image" ;;
  esac
  defsync_base="${DEFSYNC_DOWNLOAD_BASE:-}"
  defsync_base="${defsync_base%/}"
  case "$defsync_base" in
    https://*) defsync_proto='=https' ;;
    http://127.0.0.1[:/]* | http://localhost[:/]*) defsync_proto='=http' ;;
    *) defsync_die "the download-base input must be an https:// URL (or http on 127.0.0.1 for tests)" ;;
  esac
  defsync_dir="$(mktemp -d "${TMPDIR:-/tmp}/defsync-install.XXXXXXXX")"
  defsync_fetch() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
      curl --silent --show-error --fail --location --proto "$defsync_proto" --proto-redir '=https' \
        --retry 3 --connect-timeout 20 --max-time 300 --output "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
      wget -q -O "$2" "$1"
    else
      defsync_die "neither curl nor wget is installed on this runner, so defsync cannot be downloaded"
    fi
  }
  defsync_url="$defsync_base/v$defsync_version"
  defsync_fetch "$defsync_url/SHA256SUMS" "$defsync_dir/SHA256SUMS" ||
    defsync_die "cannot download SHA256SUMS of release v$defsync_version from $defsync_url"
  defsync_expected="$(awk -v name="$defsync_asset" '$2 == name || $2 == "*" name { print tolower($1); exit }' "$defsync_dir/SHA256SUMS")"
  case "$defsync_expected" in
    "") defsync_die "release v$defsync_version lists no $defsync_asset in SHA256SUMS" ;;
    *[!0-9a-f]*) defsync_die "SHA256SUMS of release v$defsync_version has a malformed line for $defsync_asset" ;;
  esac
  [ "${#defsync_expected}" -eq 64 ] || defsync_die "SHA256SUMS of release v$defsync_version has a malformed line for $defsync_asset"
  defsync_fetch "$defsync_url/$defsync_asset" "$defsync_dir/download" ||
    defsync_die "cannot download $defsync_asset of release v$defsync_version from $defsync_url"
  if command -v sha256sum >/dev/null 2>&1; then
    defsync_actual="$(sha256sum "$defsync_dir/download" | awk '{print tolower($1)}')"
  elif command -v shasum >/dev/null 2>&1; then
    defsync_actual="$(shasum -a 256 "$defsync_dir/download" | awk '{print tolower($1)}')"
  else
    defsync_die "neither sha256sum nor shasum is installed, so the download cannot be verified"
  fi
  if [ "$defsync_actual" != "$defsync_expected" ]; then
    rm -f "$defsync_dir/download"
    defsync_die "checksum mismatch for $defsync_asset of release v$defsync_version: SHA256SUMS says $defsync_expected, the download is $defsync_actual. The file was deleted, not run. Retry the job; if it fails again, report it to the defsync maintainers"
  fi
  mv "$defsync_dir/download" "$defsync_dir/defsync"
  chmod +x "$defsync_dir/defsync"
  defsync_bin="$defsync_dir/defsync"
  printf 'defsync job: downloaded %s of release v%s (SHA-256 %s, as SHA256SUMS lists)\n' "$defsync_asset" "$defsync_version" "$defsync_actual"
fi

"$defsync_bin" --version
"$defsync_bin" "$defsync_command"
