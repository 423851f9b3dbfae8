"""Reads the JSON log of one act run (act --json) for .ci/act.sh.

    act_log.py outputs LOG OUT.json   every step output that act parsed from $GITHUB_OUTPUT,
                                      as one JSON object (a later step's value wins)
    act_log.py summary LOG OUT.md     the job summary: what each of the job's steps wrote to
                                      $GITHUB_STEP_SUMMARY, in order (act logs it after each step,
                                      and deletes the file when the job succeeds)
    act_log.py exits LOG              the exit status of each failed step of the job, one
                                      "step: code" line
    act_log.py tail LOG [N]           the last N log messages as plain text, for failures
"""

import json
import re
import sys


def entries(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                # act prints some lines (its own fatal errors) without JSON.
                yield {"msg": line}
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield {"msg": line}


def outputs(log, out):
    values = {}
    for e in entries(log):
        if e.get("command") == "set-output" and "name" in e:
            values[e["name"]] = e.get("arg", "")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(values, f, indent=2, sort_keys=True)


def summary(log, out):
    parts = []
    for e in entries(log):
        # A composite action's inner steps are logged too (stepID [outer, inner]); the job
        # summary is made of the job's own steps.
        if e.get("command") == "summary" and len(e.get("stepID") or []) == 1:
            parts.append(e.get("content", ""))
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def exits(log):
    for e in entries(log):
        m = re.fullmatch(r"exit status (\d+)", e.get("msg", "").strip())
        if m and e.get("level") == "error" and len(e.get("stepID") or []) == 1:
            print(f"{e.get('step', '?')}: {m.group(1)}")


def tail(log, n):
    lines = [f"[{e.get('step', '')}] {e.get('msg', '')}".rstrip() for e in entries(log)]
    print("\n".join(lines[-n:]))


def main(argv):
    if len(argv) >= 4 and argv[1] == "outputs":
        outputs(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "summary":
        summary(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "exits":
        exits(argv[2])
    elif len(argv) in (3, 4) and argv[1] == "tail":
        tail(argv[2], int(argv[3]) if len(argv) == 4 else 60)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
