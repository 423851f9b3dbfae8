//! `defsync demo`: a complete round trip on a scratch store and Git repository, with no setup.
//!
//! It uses the same code paths as the real commands: the embedded store, real `git` with a bare
//! origin, and pull/push runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use serde_json::json;

use crate::api::{Change, CreateCommit, Direction, Origin, OriginType};
use crate::engine::plan::Preference;
use crate::engine::{self, Request};
use crate::error::exit;
use crate::git::Repo;
use crate::platform::Platform;
use crate::report::Report;
use crate::store::Store;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where to create the scratch store and repositories (default: a new temporary folder,
    /// kept so you can look around afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const PROJECT: &str = "demo";

pub async fn run(args: &DemoArgs) -> i32 {
    match demo(args).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            exit::FAILURE
        }
    }
}

fn step(n: u32, title: &str) {
    println!("\n=== {n}. {title}");
}

fn show(report: &Report) {
    for line in crate::output::human(report).lines() {
        println!("    {line}");
    }
}

async fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.canonicalize()?
        }
        None => tempfile::Builder::new().prefix("defsync-demo-").tempdir()?.keep(),
    };
    println!("defsync demo in {}", dir.display());
    println!("  store:    {}", dir.join("store.db").display());
    println!("  origin:   {}", dir.join("origin.git").display());
    println!("  checkout: {}", dir.join("work").display());

    step(1, "The platform: a project with three definitions, made in the dashboard");
    let store_path = dir.join("store.db");
    if store_path.exists() {
        anyhow::bail!("{} already exists: give --dir an empty folder", store_path.display());
    }
    let store = Store::open(&store_path)?;
    store.put_project(PROJECT, "Demo project")?;
    let platform = Platform::Embedded(store);
    dashboard(
        &platform,
        "Create three definitions",
        vec![
            put("workflow", "notify-on-deal", json!({"trigger": {"type": "event", "event": "deal.created"}, "steps": [{"id": "post", "action": "slack.post_message", "channel": "#sales", "text": "New deal: {{deal.name}}"}]})),
            put("connection", "salesforce", json!({"instance": "https://acme.my.salesforce.com", "api_version": "61.0"})),
            put("integration", "hubspot", json!({"enabled": true, "sync_interval_minutes": 15})),
        ],
    )
    .await?;
    println!("    created project {PROJECT:?} with 3 definitions");

    step(2, "Git: a bare origin and a clone of it, with one commit on main");
    let origin = dir.join("origin.git");
    let work = dir.join("work");
    git(&dir, &["init", "--quiet", "--bare", "--initial-branch=main", path(&origin)])?;
    git(&dir, &["clone", "--quiet", path(&origin), path(&work)])?;
    for (k, v) in [("user.name", "Demo User"), ("user.email", "demo@example.com"), ("commit.gpgsign", "false")] {
        git(&work, &["config", k, v])?;
    }
    git(&work, &["checkout", "--quiet", "-b", "main"])?;
    std::fs::write(work.join("README.md"), "# Demo integrations\n")?;
    git(&work, &["add", "README.md"])?;
    git(&work, &["commit", "--quiet", "-m", "Initial commit"])?;
    git(&work, &["push", "--quiet", "origin", "main"])?;
    let repo = Repo::discover(&work)?;
    let identity = crate::ci::detect().event().identity;
    let req = Request {
        project: PROJECT.into(),
        path: "platform".into(),
        branch: "main".into(),
        remote: "origin".into(),
        // Named as `defsync status` in the checkout names it, so the command printed at the end
        // finds the project linked to this very repository.
        repository: crate::cli::sync::repository_name(&repo, "origin"),
        platform: store_path.display().to_string(),
        direction: Direction::Bidirectional,
        prefer: Preference::Fail,
        dry_run: false,
        no_push: false,
        max_deletions: Default::default(),
        allow_mass_delete: false,
        requested_commit: None,
        // Who a CI runtime commits as, as the sync commands do.
        author: identity.clone(),
        committer: identity,
        run_url: None,
        delivery: Default::default(),
        commit_via: Default::default(),
        pr_branch: crate::forge::default_pr_branch(PROJECT),
        pr_labels: Vec::new(),
    };
    let forge = crate::forge::github::GitHubForge::new(None, req.repository.clone());

    step(3, "First pull: the project has no link yet, so the run links it and writes every definition");
    let report = engine::pull(&repo, &platform, &forge, &req).await?;
    show(&report);
    println!("    files now in the checkout:");
    for f in list_files(&work.join("platform"))? {
        println!("      platform/{f}");
    }

    step(4, "A second pull changes nothing (idempotent)");
    show(&engine::pull(&repo, &platform, &forge, &req).await?);

    step(5, "An edit in Git, committed and pushed, then `defsync push`");
    let wf = work.join("platform/workflow/notify-on-deal.yaml");
    let text = std::fs::read_to_string(&wf)?.replace("#sales", "#deals");
    std::fs::write(&wf, text)?;
    git(&work, &["commit", "--quiet", "-am", "Post new deals to #deals"])?;
    git(&work, &["push", "--quiet", "origin", "main"])?;
    show(&engine::push(&repo, &platform, &req).await?);
    println!("    a second push sends nothing:");
    show(&engine::push(&repo, &platform, &req).await?);

    step(6, "An edit in the dashboard, then `defsync pull` (as the platform's dispatch would run it)");
    dashboard(
        &platform,
        "Use API version 62",
        vec![put(
            "connection",
            "salesforce",
            json!({"instance": "https://acme.my.salesforce.com", "api_version": "62.0"}),
        )],
    )
    .await?;
    let report = engine::pull(&repo, &platform, &forge, &req).await?;
    show(&report);
    println!("    the commit it made:");
    for line in repo.commit_message("HEAD")?.lines() {
        println!("      | {line}");
    }
    println!("    and a push right after it does nothing, so there is no loop:");
    show(&engine::push(&repo, &platform, &req).await?);

    step(7, "Both sides edit the same definition: a conflict, and nothing changes on either side");
    dashboard(
        &platform,
        "Sync every 5 minutes",
        vec![put("integration", "hubspot", json!({"enabled": true, "sync_interval_minutes": 5}))],
    )
    .await?;
    let hub = work.join("platform/integration/hubspot.yaml");
    let text = std::fs::read_to_string(&hub)?.replace("15", "30");
    std::fs::write(&hub, text)?;
    git(&work, &["commit", "--quiet", "-am", "Sync every 30 minutes"])?;
    git(&work, &["push", "--quiet", "origin", "main"])?;
    let report = engine::push(&repo, &platform, &req).await?;
    show(&report);
    println!("    exit status would be {}", report.exit_code());

    step(8, "Resolve it: pull with --on-conflict prefer-platform");
    let prefer = Request { prefer: Preference::Platform, ..req.clone() };
    show(&engine::pull(&repo, &platform, &forge, &prefer).await?);
    println!("    and now both sides agree:");
    show(&engine::status(&repo, &platform, &req).await?);

    println!("\nDone. Try it yourself:");
    println!("  cd {}", work.display());
    let exe = std::env::current_exe().map_or_else(|_| "defsync".into(), |p| p.display().to_string());
    println!("  {exe} status --platform {} --project {PROJECT} --path platform", store_path.display());
    Ok(())
}

fn put(kind: &str, name: &str, spec: serde_json::Value) -> Change {
    Change::Put { kind: kind.into(), name: name.into(), spec, blob: None }
}

async fn dashboard(platform: &Platform, message: &str, changes: Vec<Change>) -> anyhow::Result<()> {
    let (p, _) = platform.project(PROJECT).await?;
    let body = CreateCommit {
        parent: p.head.map(|h| h.id),
        message: message.into(),
        origin: Origin { kind: OriginType::Dashboard, ..Default::default() },
        changes,
    };
    platform.create_commit(PROJECT, &body, &format!("demo-{:032x}", rand::random::<u128>())).await?;
    Ok(())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("the demo's paths are UTF-8")
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git").current_dir(dir).args(args).env("GIT_TERMINAL_PROMPT", "0").output()?;
    if !out.status.success() {
        anyhow::bail!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn list_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry?;
        if entry.file_type().is_file() {
            files.push(entry.path().strip_prefix(dir)?.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(files)
}
