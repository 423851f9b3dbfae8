//! Where `serve` sends each project's dispatches: the pull workflow of a GitHub repository, or the
//! pull pipeline of a GitLab project. One `serve` may serve projects on either forge.
//!
//! A server with one target takes it from flags (`--dispatch-forge`, `--dispatch-repository`,
//! `--dispatch-token`, …). A server whose projects live in several repositories lists its targets
//! in a YAML file (`--dispatch-targets`); the first target whose `projects` patterns match a
//! project is that project's. Tokens never go in the file: each target names the environment
//! variable that holds its token, read once at start-up.

use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::forge::github::{GitHub, GitHubError, GitHubOptions, RepoName};
use crate::forge::gitlab::{self, GitLab, GitLabError, GitLabOptions, PassAs, Project, TokenKind};
use crate::output::data;

/// Which forge a target is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    Github,
    Gitlab,
}

impl ForgeKind {
    /// The word stored in the outbox and matched by webhooks: `github`, `gitlab`.
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::Github => "github",
            ForgeKind::Gitlab => "gitlab",
        }
    }
}

/// One target as written in the targets file. Unknown fields are errors: a misspelt
/// `token_env` must not leave a target silently without a token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSpec {
    /// Project IDs or patterns with `*`; absent: every project.
    #[serde(default)]
    projects: Option<Vec<String>>,
    forge: ForgeKind,
    /// GitHub: `owner/name`. GitLab: the project's full path or numeric ID.
    repository: String,
    #[serde(default = "default_ref", rename = "ref")]
    git_ref: String,
    /// GitHub: the workflow file or its ID.
    #[serde(default)]
    workflow: Option<String>,
    /// The environment variable that holds the token: GitHub, one that may start workflows;
    /// GitLab, the project's pipeline trigger token.
    token_env: String,
    /// GitHub's API root (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[serde(default)]
    github_api_url: Option<String>,
    /// GitLab's API root or instance URL (`https://HOST` or `https://HOST/api/v4`).
    #[serde(default)]
    gitlab_url: Option<String>,
    /// GitLab: a PEM file of CA certificates to trust besides the system's.
    #[serde(default)]
    gitlab_ca_cert: Option<std::path::PathBuf>,
    /// GitLab: pass the project and commit as pipeline `variables` or as the component's `inputs`.
    #[serde(default)]
    pass_as: Option<PassAsSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PassAsSpec {
    Variables,
    Inputs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    targets: Vec<TargetSpec>,
}

fn default_ref() -> String {
    "main".into()
}

/// One place dispatches go, with its token; `Debug` never shows the token.
#[derive(Clone)]
pub struct Target {
    /// Project patterns; empty: every project.
    pub projects: Vec<String>,
    pub forge: ForgeKind,
    /// `owner/name` on GitHub; the project path or ID on GitLab.
    pub repository: String,
    pub git_ref: String,
    /// GitHub only.
    pub workflow: String,
    token: String,
    pub api_url: String,
    pub ca_cert: Option<std::path::PathBuf>,
    pub pass_as: PassAs,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("projects", &self.projects)
            .field("forge", &self.forge)
            .field("repository", &self.repository)
            .field("git_ref", &self.git_ref)
            .field("workflow", &self.workflow)
            .field("token", &"<redacted>")
            .field("api_url", &self.api_url)
            .field("pass_as", &self.pass_as)
            .finish()
    }
}

/// A target given by flags, before validation.
#[derive(Debug, Clone)]
pub struct FlagTarget {
    pub forge: ForgeKind,
    pub repository: String,
    pub git_ref: String,
    pub workflow: String,
    pub token: String,
    pub github_api_url: String,
    pub gitlab_url: Option<String>,
    pub gitlab_ca_cert: Option<std::path::PathBuf>,
    pub pass_as: PassAs,
}

impl Target {
    /// The target of a server configured by flags: every project.
    pub fn from_flags(f: FlagTarget) -> anyhow::Result<Target> {
        let api_url = match f.forge {
            ForgeKind::Github => f.github_api_url,
            ForgeKind::Gitlab => gitlab::api_url(f.gitlab_url.as_deref()),
        };
        let target = Target {
            projects: Vec::new(),
            forge: f.forge,
            repository: f.repository.trim().to_owned(),
            git_ref: f.git_ref.trim().to_owned(),
            workflow: f.workflow.trim().to_owned(),
            token: f.token,
            api_url,
            ca_cert: f.gitlab_ca_cert,
            pass_as: f.pass_as,
        };
        target.check().context("--dispatch-repository")?;
        Ok(target)
    }

    fn check(&self) -> anyhow::Result<()> {
        match self.forge {
            ForgeKind::Github => {
                RepoName::parse(&self.repository)?;
                if self.workflow.is_empty() {
                    bail!("a GitHub target needs the workflow file (e.g. defsync-pull.yml)");
                }
            }
            ForgeKind::Gitlab => {
                if self.repository.trim_matches('/').is_empty() {
                    bail!("a GitLab target needs the project's full path (group/name) or numeric ID");
                }
            }
        }
        if self.git_ref.is_empty() {
            bail!("the ref must not be empty");
        }
        Ok(())
    }

    /// The token, for the clients that read runs back (webhooks); never for a log line.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Whether `project` is one of this target's.
    pub fn serves(&self, project: &str) -> bool {
        self.projects.is_empty() || self.projects.iter().any(|p| glob_match(p, project))
    }

    /// `workflow on ref in owner/name` or `the pipeline on ref in group/name`, for log lines.
    pub fn describe(&self) -> String {
        match self.forge {
            ForgeKind::Github => format!("{} on {} in {}", self.workflow, self.git_ref, self.repository),
            ForgeKind::Gitlab => format!("the pipeline on {} in {} (GitLab)", self.git_ref, self.repository),
        }
    }

    /// Builds the client, failing at start-up on a bad token, URL or CA file.
    pub fn sender(&self) -> anyhow::Result<Sender> {
        match self.forge {
            ForgeKind::Github => {
                let github = GitHub::new(GitHubOptions::new(self.token.clone(), self.api_url.clone()))?;
                Ok(Sender::GitHub { github, repository: RepoName::parse(&self.repository)? })
            }
            ForgeKind::Gitlab => {
                let mut options = GitLabOptions::new(self.token.clone(), TokenKind::Trigger, self.api_url.clone());
                options.ca_cert = self.ca_cert.clone();
                let gitlab = GitLab::new(options)?;
                Ok(Sender::GitLab { gitlab, project: Project(self.repository.trim_matches('/').to_owned()) })
            }
        }
    }
}

/// Reads a targets file: every error names the file, and the line where the YAML says.
pub fn read_targets_file(path: &Path, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Vec<Target>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: TargetsFile = serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if file.targets.is_empty() {
        bail!("{}: `targets` is empty: list at least one target", path.display());
    }
    let mut out = Vec::with_capacity(file.targets.len());
    for (i, spec) in file.targets.into_iter().enumerate() {
        let at = format!("{}: targets[{i}] ({})", path.display(), spec.repository);
        let token = env(&spec.token_env).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).ok_or_else(|| {
            anyhow::anyhow!(
                "{at}: the environment variable {} named by `token_env` is not set or empty; set it to {}",
                spec.token_env,
                match spec.forge {
                    ForgeKind::Github => "a token that may start workflows in the repository (Actions: Read and write)",
                    ForgeKind::Gitlab =>
                        "the project's pipeline trigger token (Settings → CI/CD → Pipeline trigger tokens)",
                }
            )
        })?;
        if spec.forge == ForgeKind::Github && (spec.gitlab_url.is_some() || spec.pass_as.is_some()) {
            bail!("{at}: `gitlab_url` and `pass_as` are for GitLab targets");
        }
        if spec.forge == ForgeKind::Gitlab && (spec.workflow.is_some() || spec.github_api_url.is_some()) {
            bail!("{at}: `workflow` and `github_api_url` are for GitHub targets (GitLab runs the project's pipeline)");
        }
        let projects = spec.projects.unwrap_or_default();
        if projects.iter().any(|p| p.trim().is_empty()) {
            bail!("{at}: `projects` holds an empty pattern");
        }
        let target = Target {
            projects,
            forge: spec.forge,
            repository: spec.repository.trim().to_owned(),
            git_ref: spec.git_ref.trim().to_owned(),
            workflow: spec.workflow.unwrap_or_else(|| "defsync-pull.yml".into()).trim().to_owned(),
            token,
            api_url: match spec.forge {
                ForgeKind::Github => {
                    spec.github_api_url.unwrap_or_else(|| crate::forge::github::DEFAULT_API_URL.into())
                }
                ForgeKind::Gitlab => {
                    gitlab::api_url(Some(spec.gitlab_url.as_deref().unwrap_or(crate::forge::gitlab::DEFAULT_API_URL)))
                }
            },
            ca_cert: spec.gitlab_ca_cert,
            pass_as: match spec.pass_as {
                Some(PassAsSpec::Inputs) => PassAs::Inputs,
                _ => PassAs::Variables,
            },
        };
        target.check().with_context(|| at.clone())?;
        out.push(target);
    }
    Ok(out)
}

/// `*` matches any run of characters (including none); everything else matches itself.
fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// A target's client, ready to send.
pub enum Sender {
    GitHub { github: GitHub, repository: RepoName },
    GitLab { gitlab: GitLab, project: Project },
}

/// A run the forge started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// GitHub's workflow run ID, GitLab's pipeline ID, where the forge said.
    pub run_id: Option<u64>,
    pub run_url: Option<String>,
    /// A note for the log line, such as an answer that could not be read.
    pub note: Option<String>,
}

/// A dispatch the forge did not take.
#[derive(Debug, Clone)]
pub struct NotStarted {
    pub message: String,
    /// A retry would get the same answer: a bad token, an unknown repository, a refused ref.
    pub permanent: bool,
}

/// A failed request, in the words both forges share.
struct Refusal {
    message: String,
    permanent: bool,
    /// A 2xx whose body defsync cannot read: the forge took the dispatch all the same.
    unreadable_success: bool,
}

impl Sender {
    /// Starts the pull of `project` for `commit`. Never repeated inside: a retry after an
    /// unclear outcome could start two runs, so the outbox decides when to try again.
    pub async fn start(&self, target: &Target, project: &str, commit: &str) -> Result<Started, NotStarted> {
        let is_2xx = |status: Option<u16>| status.is_some_and(|s| (200..300).contains(&s));
        let (forge, outcome) = match self {
            Sender::GitHub { github, repository } => {
                let inputs = [("projectId", project), ("commitId", commit)];
                let sent = github.dispatch(repository, &target.workflow, &target.git_ref, &inputs).await;
                let outcome = sent.map(|run| run.map(|r| (r.id, r.html_url))).map_err(|e| Refusal {
                    unreadable_success: e.kind == crate::forge::github::ErrorKind::Protocol && is_2xx(e.status),
                    permanent: github_permanent(&e),
                    message: e.to_string(),
                });
                ("GitHub", outcome)
            }
            Sender::GitLab { gitlab, project: gl_project } => {
                let values = [("project", project), ("commit", commit)];
                let sent =
                    gitlab.trigger_pipeline(gl_project, &target.token, &target.git_ref, &values, target.pass_as).await;
                let outcome = sent.map(|p| Some((p.id, p.web_url))).map_err(|e| Refusal {
                    unreadable_success: e.kind == crate::forge::gitlab::ErrorKind::Protocol && is_2xx(e.status),
                    permanent: gitlab_permanent(&e),
                    message: e.to_string(),
                });
                ("GitLab", outcome)
            }
        };
        match outcome {
            Ok(Some((id, url))) => Ok(Started { run_id: Some(id), run_url: url, note: None }),
            Ok(None) => Ok(Started { run_id: None, run_url: None, note: Some(format!("{forge} returned no run ID")) }),
            Err(r) if r.unreadable_success => Ok(Started {
                run_id: None,
                run_url: None,
                note: Some(format!("cannot read {forge}'s answer: {}", data(&r.message))),
            }),
            Err(r) => Err(NotStarted { message: r.message, permanent: r.permanent }),
        }
    }
}

/// Whether GitHub would answer the same however often the dispatch is sent: a bad or
/// under-privileged token (401, 403), an unknown repository or workflow (404), a ref or inputs
/// the workflow refuses (422). Those wait for a person; outages, timeouts and rate limits pass.
fn github_permanent(e: &GitHubError) -> bool {
    use crate::forge::github::ErrorKind as K;
    match e.kind {
        K::Transport | K::Server | K::RateLimited | K::Protocol => false,
        _ => permanent_status(e.status),
    }
}

/// The same for GitLab: a wrong trigger token or project (404), a missing ref or a pipeline
/// that refuses the variables (400), a role that may not run it (403) wait for a person.
fn gitlab_permanent(e: &GitLabError) -> bool {
    use crate::forge::gitlab::ErrorKind as K;
    match e.kind {
        K::Transport | K::Server | K::RateLimited | K::Protocol => false,
        _ => permanent_status(e.status),
    }
}

fn permanent_status(status: Option<u16>) -> bool {
    match status {
        None | Some(408 | 429) => false,
        Some(s) => s < 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.yml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "GH" => Some("ghp_secret".into()),
            "GL" => Some("glptt-secret".into()),
            _ => None,
        }
    }

    #[test]
    fn the_first_matching_target_serves_a_project() {
        let (_d, path) = write(
            "targets:\n  - projects: [billing, 'billing-*']\n    forge: gitlab\n    repository: acme/billing-defs\n    \
             gitlab_url: https://gitlab.example.com\n    token_env: GL\n    pass_as: inputs\n  - forge: github\n    \
             repository: acme/integrations\n    token_env: GH\n",
        );
        let targets = read_targets_file(&path, env).unwrap();
        let pick = |p: &str| targets.iter().find(|t| t.serves(p)).map(|t| t.repository.as_str());
        assert_eq!(pick("billing"), Some("acme/billing-defs"));
        assert_eq!(pick("billing-eu"), Some("acme/billing-defs"));
        assert_eq!(pick("crm"), Some("acme/integrations"));
        assert_eq!(targets[0].api_url, "https://gitlab.example.com/api/v4");
        assert_eq!(targets[0].pass_as, PassAs::Inputs);
        assert_eq!(targets[1].workflow, "defsync-pull.yml");
        assert_eq!(targets[1].git_ref, "main");
        assert!(!format!("{targets:?}").contains("secret"));
    }

    #[test]
    fn file_errors_name_the_file_the_target_and_what_to_do() {
        let (_d, path) = write("targets:\n  - forge: gitlab\n    repository: g/p\n    token_env: NOPE\n");
        let e = format!("{:#}", read_targets_file(&path, env).unwrap_err());
        assert!(
            e.contains("targets.yml: targets[0] (g/p)") && e.contains("NOPE") && e.contains("trigger token"),
            "{e}"
        );

        let (_d, path) =
            write("targets:\n  - forge: gitlab\n    repository: g/p\n    token_env: GL\n    tokenenv: x\n");
        let e = format!("{:#}", read_targets_file(&path, env).unwrap_err());
        assert!(e.contains("targets.yml") && e.contains("tokenenv") && e.contains("line 5"), "{e}");

        let (_d, path) =
            write("targets:\n  - forge: gitlab\n    repository: g/p\n    token_env: GL\n    workflow: w.yml\n");
        let e = format!("{:#}", read_targets_file(&path, env).unwrap_err());
        assert!(e.contains("are for GitHub targets"), "{e}");

        let (_d, path) = write("targets:\n  - forge: github\n    repository: not-a-repo\n    token_env: GH\n");
        let e = format!("{:#}", read_targets_file(&path, env).unwrap_err());
        assert!(e.contains("targets[0]") && e.contains("owner/name"), "{e}");

        let (_d, path) = write("targets: []\n");
        assert!(format!("{:#}", read_targets_file(&path, env).unwrap_err()).contains("is empty"));
    }

    #[test]
    fn globs_match_runs_of_characters() {
        for (p, s, m) in [
            ("a", "a", true),
            ("a", "ab", false),
            ("*", "", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "ac", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXc", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob_match(p, s), m, "{p} ~ {s}");
        }
    }

    #[test]
    fn only_answers_a_retry_cannot_change_are_permanent() {
        for s in [400, 401, 403, 404, 422] {
            assert!(permanent_status(Some(s)), "{s}");
        }
        for s in [None, Some(408), Some(429), Some(500), Some(503)] {
            assert!(!permanent_status(s), "{s:?}");
        }
    }
}
