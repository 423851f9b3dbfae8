//! The dashboard's pages, as maud templates: every value is escaped by maud, so a name or spec
//! with HTML in it shows as text. No inline script or style (the CSP forbids them): behaviour is
//! in `dashboard.js`, looks in `dashboard.css`, and every page reads without JavaScript.

use maud::{DOCTYPE, Markup, html};

use super::{EditForm, Me, ProjectView, enc};
use crate::api::{Commit, OriginType};
use crate::model::Definition;
use crate::store::{CommitChange, DispatchState, OutboxEntry, ProjectSummary, RunStatus, StoredRunReport};

fn layout(title: &str, me: Option<&Me>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · defsync" }
                link rel="stylesheet" href="/static/dashboard.css";
                script src="/static/dashboard.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "defsync" }
                    @if let Some(me) = me {
                        span.who { "Logged in with " strong { (me.label()) } " (" (if me.can_write() { "write" } else { "read-only" }) ")" }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(me.csrf());
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

pub fn error_page(title: &str, message: &str) -> Markup {
    layout(
        title,
        None,
        html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/" { "Back to the projects" } " · " a href="/login" { "Log in" } }
        },
    )
}

pub fn login(csrf: &str, error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            p { "Log in with an API key of this server. A read key may look; editing, deleting and the actions need a key with the write scope." }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.login method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
        },
    )
}

pub fn project_list(me: &Me, projects: &[ProjectSummary]) -> Markup {
    layout(
        "Projects",
        Some(me),
        html! {
            h1 { "Projects" }
            @if projects.is_empty() {
                p { "No project you may see." }
            } @else {
                table {
                    caption.visually-hidden { "Projects" }
                    thead { tr { th scope="col" { "Project" } th scope="col" { "ID" } th scope="col" { "Commits" } } }
                    tbody {
                        @for p in projects {
                            tr {
                                td { a href={ "/projects/" (enc(&p.id)) } { (p.name) } }
                                td { code { (p.id) } }
                                td { (p.head_seq) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn origin_label(kind: OriginType) -> &'static str {
    match kind {
        OriginType::Dashboard => "dashboard",
        OriginType::Api => "API",
        OriginType::Git => "Git",
    }
}

/// Whether a repository is a forge path (`owner/name`, `group/sub/name`) that links under
/// `--git-web-url`, rather than a local path or a URL.
fn on_the_web(repo: &str) -> bool {
    repo.contains('/') && !repo.starts_with(['/', '.', '~']) && !repo.contains(':')
}

/// A Git origin's repository, commit and run, linked.
fn git_origin(c: &Commit, web: &str) -> Markup {
    let o = &c.origin;
    html! {
        @if let Some(repo) = &o.repository {
            @if on_the_web(repo) {
                " from " a href={ (web) "/" (repo) } { (repo) }
                @if let Some(r) = &o.git_ref { " " code { (r) } }
                @if let Some(sha) = &o.git_commit { " at " a href={ (web) "/" (repo) "/commit/" (sha) } { code { (short(sha)) } } }
            } @else {
                " from " (repo)
                @if let Some(r) = &o.git_ref { " " code { (r) } }
                @if let Some(sha) = &o.git_commit { " at " code { (short(sha)) } }
            }
        }
        @if let Some(run) = &o.run_url { " · " a href=(run) { "run" } }
    }
}

/// The outbox row that carries `commit` to Git: its newest (a retry or "Sync now" may add one),
/// or the newer one it was coalesced into.
fn dispatch_of<'a>(outbox: &'a [OutboxEntry], commit: &str) -> Option<&'a OutboxEntry> {
    let newest = |c: &str| outbox.iter().filter(|e| e.commit_id == c).max_by_key(|e| e.id);
    let mut row = newest(commit)?;
    for _ in 0..outbox.len() {
        match (&row.state, &row.coalesced_into) {
            (DispatchState::Coalesced, Some(into)) => match newest(into) {
                Some(next) => row = next,
                None => break,
            },
            _ => break,
        }
    }
    Some(row)
}

/// How the pull that carries a commit to Git stands, in the words the page uses.
pub struct PullStatus<'a> {
    /// queued, running, succeeded, failed, not started.
    pub label: &'static str,
    pub run: Option<&'a str>,
    /// What happened, when it went wrong.
    pub detail: Option<String>,
    /// What to do about it.
    pub hint: Option<&'static str>,
}

pub fn pull_status(e: &OutboxEntry) -> PullStatus<'_> {
    let run = e.run_url.as_deref();
    let s = |label, detail: Option<String>, hint| PullStatus { label, run, detail, hint };
    match e.state {
        DispatchState::Pending if e.attempts == 0 => s("queued", None, None),
        DispatchState::Pending => s(
            "queued",
            e.last_error.as_ref().map(|err| format!("attempt {} failed, retrying: {err}", e.attempts)),
            None,
        ),
        DispatchState::Coalesced => s("queued", None, None),
        DispatchState::Failed => s(
            "failed",
            e.last_error.as_ref().map(|err| format!("the dispatch was refused: {err}")),
            Some(
                "Check that the workflow file named by --dispatch-workflow exists on the dispatch ref and has a \
                 workflow_dispatch trigger, and that the token may start workflows; then Retry.",
            ),
        ),
        DispatchState::Done => match e.run_status {
            None | Some(RunStatus::Queued) => s("queued", None, None),
            Some(RunStatus::InProgress) => s("running", None, None),
            Some(RunStatus::Succeeded) => s("succeeded", None, None),
            Some(RunStatus::Failed) => s(
                "failed",
                Some(format!("the pull run ended: {}", e.run_conclusion.as_deref().unwrap_or("failure"))),
                Some("Open the run to see why it failed, fix the cause, then Sync now."),
            ),
            Some(RunStatus::NotStarted) => s(
                "not started",
                Some("GitHub accepted the dispatch, but no run appeared".into()),
                Some(
                    "The usual cause is a workflow file missing or misnamed on the dispatch ref: check \
                     --dispatch-workflow and --dispatch-ref, then Sync now.",
                ),
            ),
        },
    }
}

fn changes_list(changes: &[CommitChange]) -> Markup {
    html! {
        @if changes.is_empty() { span.muted { "no change recorded" } }
        @else {
            ul.changes {
                @for ch in changes {
                    li { span class={ "op op-" (ch.op.as_str()) } { (ch.op.as_str()) } " " (ch.kind) "/" span.name { (ch.name) } }
                }
            }
        }
    }
}

fn done_message(done: &str) -> Option<String> {
    let (what, seq) = done.split_once('-').unwrap_or((done, ""));
    Some(match what {
        "deleted" => format!("Deleted: dashboard commit seq {seq}."),
        "queued" => "A pull is queued: it appears in the history's dispatches below.".into(),
        "retried" => "The dispatch is queued again.".into(),
        _ => return None,
    })
}

pub fn project_page(me: &Me, v: &ProjectView, done: Option<&str>) -> Markup {
    let p = &v.project;
    let pid = enc(&p.id);
    let web = v.git_web_url.trim_end_matches('/');
    html! {
        (layout(&p.name, Some(me), html! {
            nav aria-label="Breadcrumb" { a href="/" { "Projects" } " / " (p.name) }
            h1 { (p.name) " " small { code { (p.id) } } }
            @if let Some(msg) = done.and_then(done_message) { p.notice role="status" { (msg) } }
            nav.toc aria-label="On this page" {
                a href="#sync" { "Sync state" } a href="#conflicts" { "Conflicts" } a href="#definitions" { "Definitions" } a href="#history" { "History" }
            }

            section #sync aria-labelledby="sync-h" {
                h2 #sync-h { "Sync state" }
                @match &v.sync.record {
                    None => p { "Not linked to a repository yet: run " code { "defsync link" } " in the repository." },
                    Some(r) => {
                        dl.link {
                            dt { "Repository" } dd { @if on_the_web(&r.repository) { a href={ (web) "/" (r.repository) } { (r.repository) } } @else { code { (r.repository) } } }
                            dt { "Branch" } dd { code { (r.git_ref) } }
                            dt { "Path" } dd { code { (r.path) } }
                            dt { "Direction" } dd { (serde_json::to_value(r.direction).ok().and_then(|d| d.as_str().map(str::to_owned)).unwrap_or_default()) }
                            dt { "Last met" } dd {
                                @match &r.commit { Some(c) => { "platform commit seq " (r.seq) " (" code { (short(c)) } ")" }, None => "never synced" }
                                @if let Some(g) = &r.git_commit {
                                    ", Git commit "
                                    @if on_the_web(&r.repository) { a href={ (web) "/" (r.repository) "/commit/" (g) } { code { (short(g)) } } } @else { code { (short(g)) } }
                                }
                                ", at " (r.updated_at)
                            }
                        }
                        h3 { "Ahead on the platform" }
                        @if v.sync.ahead.is_empty() { p { "None: every key is as Git last saw it." } }
                        @else {
                            p { (v.sync.ahead.len()) " key(s) changed here since the two sides last agreed on them, not yet in Git. The next pull carries them over (or reports a conflict if Git changed them too)." }
                            (changes_list(&v.sync.ahead))
                        }
                        h3 { "Deferred by a conflict preference" }
                        @let reported: Vec<(&StoredRunReport, &crate::api::ReportedKey)> = last_reports(&v.reports)
                            .into_iter()
                            .flat_map(|r| r.report.deferred.iter().map(move |k| (r, k)))
                            .collect();
                        @if v.sync.deferred.is_empty() && reported.is_empty() { p { "None." } }
                        @if !v.sync.deferred.is_empty() {
                            p { "A push with " code { "--on-conflict prefer-platform" } " found these keys changed on both sides and deferred them: Git still holds its own version, and the next pull writes the platform's over it." }
                            (changes_list(&v.sync.deferred))
                        }
                        @if !reported.is_empty() {
                            p { "Reported as deferred by the last runs (a pull that prefers Git leaves the platform's version as it is until the next push):" }
                            ul.changes {
                                @for (r, k) in &reported {
                                    li { (k.kind) "/" span.name { (k.name) } " · by the last " (r.report.command) @if let Some(run) = &r.report.run_url { " (" a href=(run) { "run" } ")" } }
                                }
                            }
                        }
                    }
                }
                section #actions aria-labelledby="actions-h" {
                    h3 #actions-h { "Actions" }
                    @if !v.dispatch {
                        p.muted { "This server does not dispatch the pull workflow (no --dispatch-repository), so there is nothing to start from here." }
                    } @else if !me.can_write() {
                        p.muted { "Sync now and retries need a key with the write scope." }
                    } @else {
                        form.inline method="post" action={ "/projects/" (pid) "/sync-now" } {
                            input type="hidden" name="csrf" value=(me.csrf());
                            button type="submit" { "Sync now" }
                        }
                        " Starts the pull workflow, which brings the platform's head to Git."
                    }
                }
            }

            (conflicts_section(v))

            section #definitions aria-labelledby="definitions-h" {
                h2 #definitions-h { "Definitions" }
                @if me.can_write() { p { a href={ "/projects/" (pid) "/definition" } { "New definition" } } }
                @if v.definitions.is_empty() { p { "The project has no definition at its head." } }
                @else {
                    table.defs {
                        caption.visually-hidden { "Definitions at the head" }
                        thead { tr { th scope="col" { "Kind" } th scope="col" { "Name" } th scope="col" { "Last changed by" } } }
                        tbody {
                            @for d in &v.definitions {
                                tr {
                                    td { code { (d.kind) } }
                                    td { a.name href={ "/projects/" (pid) "/definition?kind=" (enc(&d.kind)) "&name=" (enc(&d.name)) } { (d.name) } }
                                    td {
                                        @if let Some(c) = &d.changed_by {
                                            a href={ "#commit-" (c.seq) } { "seq " (c.seq) } " · " (origin_label(c.origin.kind))
                                            @if c.origin.kind == OriginType::Git { (git_origin(c, web)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }

            section #history aria-labelledby="history-h" {
                h2 #history-h { "History" }
                @if v.history.commits.is_empty() { p { "No commit yet." } }
                @else {
                    ol.history {
                        @for (c, changes) in &v.history.commits {
                            li #{ "commit-" (c.seq) } class={ "commit origin-" (origin_label(c.origin.kind)) } {
                                div.commit-head {
                                    strong { "seq " (c.seq) } " "
                                    span class={ "badge origin " (origin_label(c.origin.kind)) } { (origin_label(c.origin.kind)) }
                                    @if c.origin.kind == OriginType::Git { (git_origin(c, web)) }
                                    " · " time datetime=(c.created_at) { (c.created_at) }
                                    " · " code title=(c.id) { (short(&c.id)) }
                                }
                                p.message { (c.message) }
                                (changes_list(changes))
                                @if c.origin.kind != OriginType::Git {
                                    (dispatch_cell(me, &pid, v, c))
                                }
                            }
                        }
                    }
                    @if let Some(older) = v.history.older {
                        p { a href={ "/projects/" (pid) "?before=" (older) "#history" } { "Older commits" } }
                    }
                }
            }
        }))
    }
}

fn dispatch_cell(me: &Me, pid: &str, v: &ProjectView, c: &Commit) -> Markup {
    html! {
        div.dispatch {
            "Pull to Git: "
            @match dispatch_of(&v.outbox, &c.id) {
                None => @if v.dispatch { span.status.none { "not queued" } } @else { span.status.none { "no dispatch configured" } },
                Some(e) => {
                    @let st = pull_status(e);
                    span class={ "status " (st.label.replace(' ', "-")) } data-status=(st.label) { (st.label) }
                    @if let Some(run) = st.run { " · " a href=(run) { "run" } }
                    @if let Some(d) = &st.detail { " · " span.detail { (d) } }
                    @if e.state == DispatchState::Failed && v.dispatch && me.can_write() {
                        " "
                        form.inline method="post" action={ "/projects/" (pid) "/dispatches/" (e.id) "/retry" } {
                            input type="hidden" name="csrf" value=(me.csrf());
                            button type="submit" { "Retry" }
                        }
                    }
                    @if let Some(h) = st.hint { p.hint { (h) } }
                }
            }
        }
    }
}

/// The newest report of each command (pull, push, status): what the last runs said.
fn last_reports(reports: &[StoredRunReport]) -> Vec<&StoredRunReport> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for r in reports {
        if !seen.contains(&r.report.command.as_str()) {
            seen.push(r.report.command.as_str());
            out.push(r);
        }
    }
    out
}

/// A side of a conflict, as defsync writes its file.
fn side(kind: &str, name: &str, spec: Option<&serde_json::Value>) -> Markup {
    html! {
        @match spec {
            Some(spec) => pre.yaml { code { (crate::yaml::render(&Definition { kind: kind.to_owned(), name: name.to_owned(), spec: spec.clone() })) } },
            None => p.muted { "(deleted on this side)" },
        }
    }
}

fn conflicts_section(v: &ProjectView) -> Markup {
    let last = last_reports(&v.reports);
    let with_conflicts: Vec<&StoredRunReport> =
        last.iter().copied().filter(|r| !r.report.conflicts.is_empty()).collect();
    html! {
        section #conflicts aria-labelledby="conflicts-h" {
            h2 #conflicts-h { "Conflicts" }
            @if with_conflicts.is_empty() {
                p.muted { @if last.is_empty() { "No run has reported to this server yet." } @else { "The last runs reported no conflict." } }
            }
            @for r in with_conflicts {
                p {
                    "The last " strong { (r.report.command) } " (" (r.received_at)
                    @if let Some(run) = &r.report.run_url { ", " a href=(run) { "run" } }
                    ") found " (r.report.conflicts.len()) " key(s) changed differently on both sides. Nothing was changed for them: edit one side to match the other, or run with --on-conflict prefer-git or prefer-platform."
                }
                @for c in &r.report.conflicts {
                    div.conflict {
                        h3 { (c.kind) "/" span.name { (c.name) } }
                        div.side-by-side {
                            div { h4 { "In Git" } (side(&c.kind, &c.name, c.git.as_ref())) }
                            div { h4 { "On the platform" } (side(&c.kind, &c.name, c.platform.as_ref())) }
                        }
                    }
                }
            }
        }
    }
}

pub fn definition_page(me: &Me, f: &EditForm) -> Markup {
    let pid = enc(&f.project);
    let title =
        if f.orig_kind.is_empty() { "New definition".to_owned() } else { format!("{}/{}", f.orig_kind, f.orig_name) };
    let lines: Vec<&str> = f.text.lines().collect();
    html! {
        (layout(&title, Some(me), html! {
            nav aria-label="Breadcrumb" { a href="/" { "Projects" } " / " a href={ "/projects/" (pid) } { (f.project) } " / " (title) }
            h1 { (title) }
            @if let Some(n) = &f.notice { p.notice role="status" { (n) } }
            @if let Some(e) = &f.error {
                div.error role="alert" #form-error data-line=[e.line] {
                    p { @if let Some(l) = e.line { "Line " (l) @if let Some(c) = e.column { ", column " (c) } ": " } (e.message) }
                    @if !e.details.is_empty() { ul { @for d in &e.details { li { (d) } } } }
                    @if let Some(l) = e.line {
                        ol.listing start=(l.saturating_sub(2).max(1)) aria-label="The lines around the error" {
                            @for (i, line) in lines.iter().enumerate().skip((l as usize).saturating_sub(3)).take(5) {
                                li class=[(i + 1 == l as usize).then_some("bad")] { code { (line) } }
                            }
                        }
                    }
                }
            }
            @if !f.orig_kind.is_empty() && f.error.is_none() {
                h2 { "As defsync writes it to Git" }
                pre.yaml { code { (f.text) } }
            }
            @if let Some(current) = &f.current {
                div.side-by-side {
                    div { h2 { "The current version" } pre.yaml { code { (current) } } }
                    div { h2 { "Your text" } pre.yaml { code { (f.text) } } }
                }
            }
            @if me.can_write() {
                h2 { @if f.orig_kind.is_empty() { "Write it" } @else { "Edit" } }
                form.edit method="post" action={ "/projects/" (pid) "/save" } {
                    input type="hidden" name="csrf" value=(me.csrf());
                    input type="hidden" name="parent" value=(f.parent.as_ref().map(|p| p.id.as_str()).unwrap_or_default());
                    input type="hidden" name="orig_kind" value=(f.orig_kind);
                    input type="hidden" name="orig_name" value=(f.orig_name);
                    input type="hidden" name="nonce" value=(f.nonce);
                    p.muted {
                        "Based on "
                        @match &f.parent { Some(p) => { "seq " (p.seq) }, None => "an empty project" }
                        ". If someone saves in between, you are told, and nothing you wrote is lost."
                    }
                    label for="text" { "Definition (YAML: kind, name, spec)" }
                    textarea #text name="text" rows=(lines.len().clamp(8, 40) + 2) spellcheck="false" autocapitalize="off" { (f.text) }
                    label for="message" { "Commit message (optional)" }
                    input #message type="text" name="message" value=(f.message) maxlength="500";
                    div.buttons {
                        button type="submit" { "Save" }
                        @if !f.orig_kind.is_empty() {
                            a.button.danger href={ "/projects/" (pid) "/delete?kind=" (enc(&f.orig_kind)) "&name=" (enc(&f.orig_name)) } { "Delete…" }
                        }
                    }
                }
            } @else {
                p.muted { "Editing needs a key with the write scope." }
            }
        }))
    }
}

pub fn delete_page(
    me: &Me,
    project: &str,
    kind: &str,
    name: &str,
    head: Option<&Commit>,
    nonce: &str,
    error: Option<&str>,
) -> Markup {
    let pid = enc(project);
    html! {
        (layout("Delete a definition", Some(me), html! {
            nav aria-label="Breadcrumb" { a href="/" { "Projects" } " / " a href={ "/projects/" (pid) } { (project) } }
            h1 { "Delete " (kind) "/" span.name { (name) } "?" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            p { "This makes a dashboard commit that deletes the definition; the next pull deletes its file in Git." }
            form method="post" action={ "/projects/" (pid) "/delete" } {
                input type="hidden" name="csrf" value=(me.csrf());
                input type="hidden" name="parent" value=(head.map(|h| h.id.as_str()).unwrap_or_default());
                input type="hidden" name="kind" value=(kind);
                input type="hidden" name="name" value=(name);
                input type="hidden" name="nonce" value=(nonce);
                div.buttons {
                    button.danger type="submit" { "Delete it" }
                    a.button href={ "/projects/" (pid) "/definition?kind=" (enc(kind)) "&name=" (enc(name)) } { "Cancel" }
                }
            }
        }))
    }
}
