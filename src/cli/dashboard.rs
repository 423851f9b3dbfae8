//! `defsync dashboard`: play the part of someone editing in the platform's dashboard, against a
//! store or a server. For the quickstart, demos and tests.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::api::{Change, CreateCommit, Origin, OriginType};
use crate::cli::PlatformArgs;
use crate::cli::sync::{open_platform, project};
use crate::error::{Error, Result};
use crate::platform::{Platform, PlatformError};

#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub platform: PlatformArgs,
    #[command(subcommand)]
    pub action: DashboardAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DashboardAction {
    /// Create the project (or rename it). With a store path, the store is created too: the only
    /// command that creates one.
    CreateProject {
        /// The project's display name (default: its ID).
        #[arg(long)]
        name: Option<String>,
    },
    /// Put definitions from YAML files, as one dashboard commit.
    Put {
        /// Definition files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The commit message.
        #[arg(long, short, default_value = "Edit in the dashboard")]
        message: String,
    },
    /// Delete a definition, as one dashboard commit.
    Delete {
        kind: String,
        name: String,
        #[arg(long, short, default_value = "Delete in the dashboard")]
        message: String,
    },
}

pub async fn run(args: &DashboardArgs) -> Result<String> {
    let project = project(&args.platform)?;
    // Only create-project makes a store; every other command needs one that exists, so a
    // mistyped path is an error rather than a new, empty store.
    let mut new_store = None;
    let platform = match (&args.action, crate::cli::sync::location(&args.platform)?) {
        (DashboardAction::CreateProject { .. }, crate::platform::Location::Store(path)) => {
            if !path.exists() {
                new_store = Some(path.clone());
            }
            crate::store::Store::open(&path).map(Platform::Embedded).map_err(|e| Error::Config(format!("{e:#}")))?
        }
        _ => open_platform(&args.platform)?,
    };
    match &args.action {
        DashboardAction::CreateProject { name } => {
            let (p, created) = platform.put_project(&project, name.as_deref().unwrap_or(&project)).await?;
            let store = new_store.map(|s| format!("created the store {} and ", s.display())).unwrap_or_default();
            Ok(format!("{store}{} project {}", if created { "created" } else { "renamed" }, p.id))
        }
        DashboardAction::Put { files, message } => {
            let mut changes = Vec::new();
            let mut seen: std::collections::HashMap<crate::model::Key, &PathBuf> = std::collections::HashMap::new();
            for file in files {
                let text =
                    std::fs::read(file).map_err(|e| Error::Config(format!("cannot read {}: {e}", file.display())))?;
                let def = crate::yaml::parse(&text).map_err(|e| {
                    let at = e.line.map(|l| format!(":{l}")).unwrap_or_default();
                    Error::Invalid(format!("{}{at}: {e}", file.display()))
                })?;
                if let Some(first) = seen.insert(def.key(), file) {
                    return Err(Error::Invalid(format!(
                        "{} is defined in both {} and {}: put one of them; nothing was sent",
                        def.key(),
                        first.display(),
                        file.display()
                    )));
                }
                changes.push(Change::Put { kind: def.kind, name: def.name, spec: def.spec, blob: None });
            }
            commit(&platform, &project, message, changes).await
        }
        DashboardAction::Delete { kind, name, message } => {
            commit(&platform, &project, message, vec![Change::Delete { kind: kind.clone(), name: name.clone() }]).await
        }
    }
}

/// Commits on the current head, re-reading it if another edit landed first.
async fn commit(platform: &Platform, project: &str, message: &str, changes: Vec<Change>) -> Result<String> {
    for _ in 0..crate::engine::MAX_ATTEMPTS {
        let (p, _) = platform.project(project).await?;
        let body = CreateCommit {
            parent: p.head.map(|h| h.id),
            message: message.to_owned(),
            origin: Origin { kind: OriginType::Dashboard, ..Default::default() },
            changes: changes.clone(),
        };
        let key = format!("dashboard-{:032x}", rand::random::<u128>());
        match platform.create_commit(project, &body, &key).await {
            Ok(c) => return Ok(format!("platform commit {} (seq {})", c.id, c.seq)),
            Err(PlatformError::Api(e)) if e.is("head_moved") => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Other(anyhow::anyhow!("the project's head kept moving; try again")))
}
