#!/usr/bin/env python3
"""Generates action.yml and the pull/ and push/ wrappers from one description, so the three
stay alike. Run from the repository root: python3 scripts/gen-action.py"""
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
    open(f"{cmd}/action.yml", "w").write(render(
        f"defsync {cmd}", desc, cmd,
        # The wrapper lives in a subfolder of the same checkout as the scripts.
        "${{ github.action_path }}/..", GEN))
