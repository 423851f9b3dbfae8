#!/usr/bin/env python3
"""Generates action.yml and the pull/ and push/ wrappers from one description, so the three
stay alike. Run from the repository root: python3 scripts/gen-action.py"""
import os
import re

INPUTS = [
  ("command", "What to run: pull (platform to Git), push (Git to platform), status (show both, change nothing), link (connect the project and this branch) or doctor (check the platform, the tokens and their permissions).", None, "DEFSYNC_COMMAND"),
  ("platform-url", "The platform's base URL, such as https://api.example.com.", None, "DEFSYNC_PLATFORM"),
  ("api-key", "The platform API key. Pass it from a secret, such as secrets.DEFSYNC_API_KEY.", None, "DEFSYNC_API_KEY"),
  ("project-id", "The project ID on the platform. Defaults to the `projectId` input of a workflow_dispatch event.", "", "DEFSYNC_PROJECT"),
  ("commit-id", "Pull only: the platform commit that asked for this run. Defaults to the `commitId` input of a workflow_dispatch event. A pull always syncs the platform's head.", "", "DEFSYNC_COMMIT"),
  ("path", "The sync root: the folder of definition files, relative to the repository root.", ".", "DEFSYNC_PATH"),
  ("direction", "The link's direction: bidirectional, git-to-platform or platform-to-git.", "bidirectional", "DEFSYNC_DIRECTION"),
  ("on-conflict", "What to do with definitions changed on both sides: fail (change nothing), prefer-git, prefer-platform, or (pull with pull-request delivery) pull-request. Defaults to fail, or to pull-request with pull-request delivery.", "", "DEFSYNC_ON_CONFLICT"),
  ("branch", "The branch to sync. Defaults to the checked-out branch.", "", "DEFSYNC_BRANCH"),
  ("dry-run", "true to plan and report without writing anything.", "false", "DEFSYNC_DRY_RUN"),
  ("max-deletions", "The deletion guard: a run that would delete more than this many of one side's definitions stops, changes nothing and fails (exit 2). A count such as 20, or a share such as 50% (applied when that side holds at least 10 definitions).", "50%", "DEFSYNC_MAX_DELETIONS"),
  ("allow-mass-delete", "true to let this run delete more than max-deletions allows, after moving or emptying the sync root (or emptying the project) on purpose. Set it for one run, not permanently.", "false", "DEFSYNC_ALLOW_MASS_DELETE"),
  ("github-token", "A GitHub token for GitHub API calls. The default job token is enough for most uses; see the README's Tokens section.", "${{ github.token }}", "DEFSYNC_GITHUB_TOKEN"),
  ("delivery", "Pull only: commit (onto the branch) or pull-request (onto defsync's branch, with a pull request into the branch).", "commit", "DEFSYNC_DELIVERY"),
  ("commit-via", "Pull only: git (commit locally and git push) or api (commit through GitHub's API: signed by GitHub, for branch rules that require signed commits).", "git", "DEFSYNC_COMMIT_VIA"),
  ("pr-branch", "Pull-request delivery: defsync's branch. Defaults to defsync/<project>.", "", "DEFSYNC_PR_BRANCH"),
  ("pr-labels", "Pull-request delivery: labels for the pull request, comma-separated.", "", "DEFSYNC_PR_LABELS"),
  ("committer", "Committer of pull commits, as \"Name <email>\". Defaults to github-actions[bot].", "", "DEFSYNC_COMMITTER"),
  ("author", "Author of pull commits, as \"Name <email>\". Defaults to the committer.", "", "DEFSYNC_AUTHOR"),
  ("version", "The defsync release to run, such as 1.2.3. Defaults to the release of the action's own ref; when the ref is not a release (a branch, a commit without a release, or uses: ./), defsync is built from the action's source.", "", "DEFSYNC_INSTALL_VERSION"),
]
OUTPUTS = [
  ("status", "The result: in_sync, changed, conflict, invalid, dry_run, mass_delete (stopped by the deletion guard) or error."),
  ("changed", "true when this run changed either side (always false for status and dry runs)."),
  ("git-commit", "The Git commit the run synced or made."),
  ("platform-commit", "The ID of the platform commit the run synced or made."),
  ("added", "Definitions added, on both sides together."),
  ("updated", "Definitions updated, on both sides together."),
  ("deleted", "Definitions deleted, on both sides together."),
  ("conflicts", "Definitions changed on both sides."),
  ("report", "The full JSON report (use fromJSON)."),
]
CACHE = "actions/cache@27d5ce7f107fe9357f9df03efb73ab90386fccae # v5.0.5"

def q(s):
    return "'" + s.replace("'", "''") + "'"

def render(name, description, command, action_dir, header):
    out = [header, f"name: {q(name)}", f"description: {q(description)}", "author: defsync",
           "branding:", "  icon: refresh-cw", "  color: blue", "", "inputs:"]
    for (n, d, default, _env) in INPUTS:
        if command and n == "command":
            continue
        out.append(f"  {n}:")
        out.append(f"    description: {q(d)}")
        required = default is None
        out.append(f"    required: {'true' if required else 'false'}")
        if default is not None:
            out.append(f"    default: {q(default)}")
    out.append("")
    out.append("outputs:")
    for (n, d) in OUTPUTS:
        out.append(f"  {n}:")
        out.append(f"    description: {q(d)}")
        out.append(f"    value: ${{{{ steps.run.outputs.{n} }}}}")
    cmd_value = q(command) if command else "${{ inputs.command }}"
    out += f"""
runs:
  using: composite
  steps:
    # Every input reaches the scripts and the binary through env:, never through the script text,
    # so no input can inject shell code. github.action_ref and github.action_repository are read
    # in env:, where the runner fills them for composite actions (they are empty inside run:).
    - name: Install defsync
      id: install
      shell: bash
      env:
        DEFSYNC_ACTION_DIR: {action_dir}
        DEFSYNC_ACTION_REF: ${{{{ github.action_ref }}}}
        DEFSYNC_ACTION_REPOSITORY: ${{{{ github.action_repository }}}}
        DEFSYNC_INSTALL_VERSION: ${{{{ inputs.version }}}}
      run: bash "$DEFSYNC_ACTION_DIR/scripts/install.sh" resolve

    # Only when no release matches the action's ref: cargo's downloads, its target directory and
    # the built binary are cached per runner OS and architecture, keyed by a hash of the source.
    # (hashFiles cannot be used: it only sees files in the workspace, and the action is elsewhere.)
    - name: Restore the defsync build cache
      if: steps.install.outputs.mode == 'build'
      uses: {CACHE}
      with:
        path: |
          ${{{{ steps.install.outputs.build-dir }}}}
          ~/.cargo/registry/index
          ~/.cargo/registry/cache
          ~/.cargo/git/db
        key: defsync-build-${{{{ runner.os }}}}-${{{{ runner.arch }}}}-${{{{ steps.install.outputs.source-hash }}}}
        restore-keys: defsync-build-${{{{ runner.os }}}}-${{{{ runner.arch }}}}-

    - name: Build defsync from source
      id: build
      if: steps.install.outputs.mode == 'build'
      shell: bash
      env:
        DEFSYNC_ACTION_DIR: {action_dir}
        DEFSYNC_BUILD_DIR: ${{{{ steps.install.outputs.build-dir }}}}
      run: bash "$DEFSYNC_ACTION_DIR/scripts/install.sh" build

    - name: Run defsync
      id: run
      shell: bash
      env:
        DEFSYNC_ACTION_DIR: {action_dir}
        DEFSYNC_BIN: ${{{{ steps.build.outputs.bin || steps.install.outputs.bin }}}}
        DEFSYNC_COMMAND: {cmd_value}
""".rstrip("\n").split("\n")
    for (n, _d, _default, env) in INPUTS:
        if n in ("command", "version"):
            continue
        out.append(f"        {env}: ${{{{ inputs.{n} }}}}")
    out.append('      run: bash "$DEFSYNC_ACTION_DIR/scripts/run.sh"')
    return "\n".join(out) + "\n"

GEN = "# Generated by scripts/gen-action.py from one description, so action.yml and the pull/ and\n# push/ wrappers keep the same inputs, outputs and steps. Edit that script, not this file.\n"
open("action.yml", "w").write(render(
    "defsync", "Keep a platform's project definitions and this repository in sync, both ways.",
    None, "${{ github.action_path }}", GEN))
for cmd, desc in [("pull", "Bring the platform's head into this branch: write the definition files, commit and push."),
                  ("push", "Send the definitions changed on this branch to the platform as one commit.")]:
    os.makedirs(cmd, exist_ok=True)
    open(f"{cmd}/action.yml", "w").write(render(
        f"defsync {cmd}", desc, cmd,
        # The wrapper lives in a subfolder of the same checkout as the scripts.
        "${{ github.action_path }}/..", GEN))

# ---------------------------------------------------------------------------------------------
# The example pull workflow's run-name: `defsync serve` ties a run to the dispatch that started it
# by the platform commit ID in the run's title, where GitHub's answer to the dispatch named no
# run (see "Run status" in the README). The example is hand-written; only this line is generated.
PULL_RUN_NAME = "run-name: defsync pull ${{ inputs.projectId }} ${{ inputs.commitId }}"
PULL_EXAMPLE = "examples/workflows/defsync-pull.yml"
if os.path.exists(PULL_EXAMPLE):
    lines = open(PULL_EXAMPLE).read().split("\n")
    lines = [l for l in lines if not l.startswith("run-name:")]
    at = lines.index("name: defsync pull") + 1
    lines.insert(at, PULL_RUN_NAME)
    open(PULL_EXAMPLE, "w").write("\n".join(lines))

# ---------------------------------------------------------------------------------------------
# The GitLab CI/CD component: templates/<name>.yml in GitLab's component-project layout, with
# the Action's inputs as typed `spec: inputs`, and scripts/gitlab-job.sh as the job's script.
import os
import re

# Who publishes the component sets these (and the README says so): the image and the releases
# the jobs use. The version follows Cargo.toml, so a release's templates pin that release.
PUBLISHER = "<owner>"
VERSION = re.search(r'(?m)^version = "([^"]+)"', open("Cargo.toml").read()).group(1) if os.path.exists("Cargo.toml") else "0.0.0"

# Inputs that mean something else on GitLab, or nothing.
GITLAB_SKIP = {"command", "github-token", "version", "api-key"}
GITLAB_DESCRIPTIONS = {
  "platform-url": "The platform's base URL, such as https://api.example.com. Defaults to the CI/CD variable DEFSYNC_PLATFORM_URL.",
  "project-id": "The project ID on the platform. Defaults to the pipeline variable DEFSYNC_PROJECT_ID (the platform's trigger sets it), or pass the pipeline input through.",
  "commit-id": "Pull only: the platform commit that asked for this run. Defaults to the pipeline variable DEFSYNC_COMMIT_ID (the platform's trigger sets it). A pull always syncs the platform's head.",
  "branch": "The branch to sync. Defaults to the pipeline's branch (CI_COMMIT_BRANCH).",
  "committer": "Committer of pull commits, as \"Name <email>\". Defaults to defsync (GitLab CI) <noreply@$CI_SERVER_HOST>.",
  "delivery": "Pull only: commit (onto the branch) or pull-request (onto defsync's branch, with a merge request into the branch; needs the GitLab forge).",
  "commit-via": "Pull only: git (commit locally and git push) or api (one commit through the forge's API; needs the GitLab forge).",
  "pr-branch": "Merge-request delivery: defsync's branch. Defaults to defsync/<project>.",
  "pr-labels": "Merge-request delivery: labels for the merge request, comma-separated.",
}
# Enums: GitLab checks the value against `options:` when the pipeline is created.
GITLAB_OPTIONS = {
  "direction": ["bidirectional", "git-to-platform", "platform-to-git"],
  "on-conflict": ["", "fail", "prefer-git", "prefer-platform", "pull-request"],
  "dry-run": ["false", "true"],
  "allow-mass-delete": ["false", "true"],
  "delivery": ["commit", "pull-request"],
  "commit-via": ["git", "api"],
}
GITLAB_DEFAULTS = {"platform-url": "$DEFSYNC_PLATFORM_URL"}
# Inputs of the component itself, before the binary's.
GITLAB_OWN = [
  ("stage", "The stage of the job.", "deploy", None, None),
  ("image", "The defsync image the job runs in (its entrypoint is reset). Ignored by shell runners, which download the release instead.", f"ghcr.io/{PUBLISHER}/defsync:{VERSION}", None, None),
  ("install", "Where the binary comes from: auto (the image's defsync when it is the version below, else the release download), image (never download) or release (always download and check the release's SHA256SUMS).", "auto", "DEFSYNC_INSTALL", ["auto", "image", "release"]),
  ("version", "The defsync release the job runs, such as 1.2.3; the image should hold the same.", VERSION, "DEFSYNC_INSTALL_VERSION", None),
  ("download-base", "Where releases are downloaded from on shell runners: <download-base>/v<version>/SHA256SUMS and the binaries.", f"https://github.com/{PUBLISHER}/defsync/releases/download", "DEFSYNC_DOWNLOAD_BASE", None),
  ("api-key-variable", "The name of the masked CI/CD variable that holds the platform API key (never the key itself: inputs are visible in the pipeline's configuration).", "DEFSYNC_API_KEY", "DEFSYNC_API_KEY_VARIABLE", None),
  ("report-dir", "Where the job writes its reports, relative to the project directory: defsync.env (dotenv), defsync-report.json, gl-code-quality-report.json and defsync-summary.md.", "defsync-reports", "DEFSYNC_REPORT_DIR", None),
  ("resource-group", "The resource group of the job: pull and push jobs of one group never run at the same time.", "defsync", None, None),
]
REPORT_DIR_REGEX = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"

# name, description, command, fixed variables, rules, binary inputs left out
TEMPLATES = [
  ("pull", "defsync pull: bring the platform's head into the branch (write the definition files, commit and push). Runs in pipelines the platform's trigger starts.",
   "pull", {}, ["$CI_PIPELINE_SOURCE == \"trigger\"", "$CI_PIPELINE_SOURCE == \"pipeline\"", "$CI_PIPELINE_SOURCE == \"api\"", "$CI_PIPELINE_SOURCE == \"web\""], set()),
  ("push", "defsync push: send the definitions changed on the default branch to the platform as one commit.",
   "push", {}, ["$CI_PIPELINE_SOURCE == \"push\" && $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"], {"commit-id", "delivery", "commit-via", "pr-branch", "pr-labels", "committer", "author"}),
  ("check", "defsync check: in merge request pipelines, a dry run of push that shows what merging would send, and fails on a conflict or an invalid file. Writes nothing.",
   "push", {"DEFSYNC_DRY_RUN": "true"}, ["$CI_PIPELINE_SOURCE == \"merge_request_event\""], {"commit-id", "delivery", "commit-via", "pr-branch", "pr-labels", "committer", "author", "dry-run", "allow-mass-delete", "resource-group"}),
]

def yq(s):
    # Double-quoted YAML: every input value and description is data.
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

def render_gitlab(name, description, command, fixed, rules, skip):
    header = ("# Generated by scripts/gen-action.py from the action's inputs and scripts/gitlab-job.sh, so the\n"
              "# GitLab CI/CD component and the GitHub Action stay alike. Edit those, not this file.\n"
              f"# {description}\n")
    out = [header.rstrip("\n"), "spec:", "  inputs:"]
    variables = []
    for (n, d, default, env, options) in GITLAB_OWN:
        if n == "resource-group" and n in skip:
            continue
        out.append(f"    {n}:")
        out.append(f"      description: {yq(d)}")
        out.append(f"      default: {yq(default)}")
        if options:
            out.append("      options: [" + ", ".join(yq(o) for o in options) + "]")
        if n == "report-dir":
            out.append(f"      regex: {yq(REPORT_DIR_REGEX)}")
        if env:
            variables.append((env, f"$[[ inputs.{n} ]]"))
    for (n, d, default, env) in INPUTS:
        if n in GITLAB_SKIP or n in skip:
            continue
        d = GITLAB_DESCRIPTIONS.get(n, d)
        default = GITLAB_DEFAULTS.get(n, default if default is not None else "")
        out.append(f"    {n}:")
        out.append(f"      description: {yq(d)}")
        out.append(f"      default: {yq(default)}")
        if n in GITLAB_OPTIONS:
            out.append("      options: [" + ", ".join(yq(o) for o in GITLAB_OPTIONS[n]) + "]")
        variables.append((env, f"$[[ inputs.{n} ]]"))
    job = f"defsync-{name}"
    out += ["---", f"{job}:", "  stage: $[[ inputs.stage ]]",
            "  # The image's entrypoint is defsync itself; GitLab needs a shell.",
            "  image:", "    name: $[[ inputs.image ]]", "    entrypoint: [\"\"]"]
    if "resource-group" not in skip:
        out.append("  resource_group: $[[ inputs.resource-group ]]")
    out.append("  rules:")
    for r in rules:
        out.append(f"    - if: {yq(r)}")
    out.append("  variables:")
    out.append(f"    DEFSYNC_JOB_COMMAND: {yq(command)}")
    for k, v in fixed.items():
        out.append(f"    {k}: {yq(v)}")
    for env, v in variables:
        out.append(f"    {env}: {yq(v)}")
    out += ["  script:", "    - |"]
    for line in open("scripts/gitlab-job.sh").read().rstrip("\n").split("\n"):
        out.append(("      " + line).rstrip())
    out += ["  artifacts:",
            "    # Reports are uploaded whatever the job's result: a failed run is the one to read.",
            "    when: always",
            "    expose_as: defsync report",
            "    paths:",
            "      - $[[ inputs.report-dir ]]/",
            "    reports:",
            "      dotenv: $[[ inputs.report-dir ]]/defsync.env",
            "      codequality: $[[ inputs.report-dir ]]/gl-code-quality-report.json"]
    return "\n".join(out) + "\n"

os.makedirs("templates", exist_ok=True)
for t in TEMPLATES:
    open(f"templates/{t[0]}.yml", "w").write(render_gitlab(*t))
