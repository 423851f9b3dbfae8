#!/usr/bin/env bash
# Runs the installed defsync for the GitHub Action (action.yml runs exactly this script).
#
# Inputs arrive as DEFSYNC_* environment variables, which the binary reads as its option
# fallbacks, so no input is ever part of a script's text. This script only:
#   - checks DEFSYNC_COMMAND against the four commands (it becomes an argument, not an env var);
#   - unsets empty DEFSYNC_* variables, because an unset action input arrives as "" and the
#     binary would take "" as a value (`--direction ""` is an error, not the default);
#   - runs DEFSYNC_BIN, which the install step wrote as its `bin` output.
set -euo pipefail

command="${DEFSYNC_COMMAND:-}"
bin="${DEFSYNC_BIN:-}"
unset DEFSYNC_COMMAND DEFSYNC_BIN

case "$command" in
  pull | push | status | link | doctor) ;;
  *)
    # The value is not echoed: it is an input, and the message needs no more than this.
    echo "::error title=defsync::the command input must be pull, push, status, link or doctor"
    exit 2
    ;;
esac
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "::error title=defsync::the defsync binary is missing; the install step did not finish"
  exit 1
fi

for name in $(compgen -e); do
  case "$name" in
    DEFSYNC_*) [ -n "${!name}" ] || unset "$name" ;;
  esac
done

exec "$bin" "$command"
