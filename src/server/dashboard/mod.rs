//! The web dashboard of `defsync serve`: server-rendered pages (maud, which escapes every value)
//! for the project list and each project (definitions, history with the dispatch of each
//! dashboard commit, sync state, conflicts reported by runs, actions), behind a login with an
//! API key. A read key may look; editing, deleting and actions need a write key.
//!
//! Security: a server-side session (see `session.rs`) in an `HttpOnly`, `SameSite=Strict`
//! cookie, `Secure` unless `serve` listens on loopback; a per-session CSRF token in every form,
//! compared in constant time; a Content-Security-Policy that allows no inline script or style.
//! Edits go through [`Store::create_commit`] with the same bytes the API takes, so they are
//! validated exactly as API commits are.

mod session;
mod views;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{AppState, Failure, blocking, key_index, unix_now};
use crate::api::{ApiError, Change, Commit, CreateCommit, Origin, OriginType};
use crate::store::{Access, KeyScope};
use session::{LOGIN_COOKIE, SESSION_COOKIE, SESSION_TTL, Session, Sessions, Who, same_secret, set_cookie};

/// How the dashboard is served.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// Cookies get `Secure`: true unless `serve` listens on a loopback address, where browsers
    /// reach it over plain HTTP.
    pub secure_cookies: bool,
    /// The web root of the linked repositories (`https://github.com`), for commit links.
    pub git_web_url: String,
}

/// The dashboard's own state, inside [`AppState`].
pub(crate) struct Dashboard {
    pub options: DashboardOptions,
    pub sessions: Sessions,
}

impl Dashboard {
    pub fn new(options: DashboardOptions) -> Self {
        Dashboard { options, sessions: Sessions::default() }
    }
}

/// Run reports read for the conflicts section: the newest of each command is shown.
const RUN_REPORTS_SHOWN: u32 = 20;
/// Commits per page of history.
const HISTORY_PAGE: u32 = 20;
/// The largest form accepted: a definition file may be 4 MiB, and URL encoding can triple it.
const MAX_FORM_BYTES: usize = 16 * 1024 * 1024;

/// No inline script or style, no framing, forms only to this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("dashboard.css");
const JS: &str = include_str!("dashboard.js");

/// The dashboard's routes; `state.dashboard` must be set.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/static/dashboard.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route("/static/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        // No icon: an empty answer rather than the API's 401, which browsers log as an error.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/projects/{project}", get(project_page))
        .route("/projects/{project}/definition", get(definition_page))
        .route("/projects/{project}/save", post(save))
        .route("/projects/{project}/delete", get(delete_page).post(delete))
        .route("/projects/{project}/sync-now", post(sync_now))
        .route("/projects/{project}/dispatches/{id}/retry", post(retry))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(api_clients))
}

/// A request with a bearer key is an API client, which never follows redirects (contract part
/// 3): it gets the API's own answer for a path that is not an endpoint, never the login page.
/// Browsers send no bearer key (a proxy's Basic credentials still reach the pages).
async fn api_clients(request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer ")));
    if bearer {
        return super::no_route().await.into_response();
    }
    next.run(request).await
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show definitions: no shared or back-button cache keeps them after a logout.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn dash(s: &AppState) -> &Dashboard {
    s.dashboard.as_ref().expect("the dashboard routes are mounted only with a dashboard")
}

/// A page that could not be shown, as an HTML page with its status.
pub(super) struct PageError {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl PageError {
    fn new(status: u16, title: &'static str, message: impl Into<String>) -> Self {
        PageError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            title,
            message: message.into(),
        }
    }
}

impl From<Failure> for PageError {
    fn from(Failure(e): Failure) -> Self {
        PageError::from(e)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        let title = match e.status {
            401 => "Not logged in",
            403 => "Not allowed",
            404 => "Not found",
            _ => "Something went wrong",
        };
        PageError::new(e.status, title, e.message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.status, views::error_page(self.title, &self.message)).into_response()
    }
}

type Page = Result<Response, PageError>;

/// The logged-in session of a request, checked against its key now.
pub(super) struct Me {
    session: Session,
    /// What the key may do: a full-access key writes.
    scope: KeyScope,
    /// The projects the key is limited to, when it is.
    projects: Option<Vec<String>>,
}

impl Me {
    pub fn label(&self) -> String {
        self.session.label()
    }

    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }

    pub fn can_write(&self) -> bool {
        self.scope == KeyScope::Write
    }

    fn may_see(&self, project: &str) -> bool {
        self.projects.as_ref().is_none_or(|ps| ps.iter().any(|p| p == project))
    }

    /// Refuses a project the key may not use, or a change with a read key.
    fn check(&self, project: &str, access: Access) -> Result<(), PageError> {
        if !self.may_see(project) {
            return Err(PageError::new(
                403,
                "Not allowed",
                format!("the key you logged in with ({}) may not use project {project:?}", self.label()),
            ));
        }
        if access == Access::Write && !self.can_write() {
            return Err(PageError::new(
                403,
                "Not allowed",
                format!(
                    "the key you logged in with ({}) is read-only: log in with a key of the write scope to change \
                     anything",
                    self.label()
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a form whose CSRF token is not this session's.
    fn check_csrf(&self, given: &str) -> Result<(), PageError> {
        if same_secret(given, &self.session.csrf) {
            Ok(())
        } else {
            Err(PageError::new(
                403,
                "Form expired",
                "the form's security token does not match your session (it was opened in another session, or the \
                 session ended): reload the page and submit it again",
            ))
        }
    }
}

/// The session of the request, if it has a live one whose key still holds.
async fn me(s: &Arc<AppState>, headers: &HeaderMap) -> Option<Me> {
    let id = session::cookie(headers, SESSION_COOKIE)?;
    let d = dash(s);
    let session = d.sessions.get(id)?;
    match &session.who {
        Who::FullKey(_) => Some(Me { session, scope: KeyScope::Write, projects: None }),
        Who::Stored(name) => {
            let store = s.store.clone();
            let keys = blocking(move || store.keys()).await.ok()?;
            let key = keys.into_iter().find(|k| &k.name == name);
            // Revoked or expired since the login: the session ends with the key.
            match key.filter(|k| k.authorize(None, Access::Read, unix_now()).is_ok()) {
                Some(k) => Some(Me { session, scope: k.scope, projects: k.projects }),
                None => {
                    d.sessions.remove(id);
                    None
                }
            }
        }
    }
}

/// The request's session, or the answer that sends the browser to the login page.
async fn require(s: &Arc<AppState>, headers: &HeaderMap) -> Result<Me, PageError> {
    me(s, headers).await.ok_or_else(|| PageError::new(401, "Not logged in", "log in with an API key to continue"))
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

async fn index(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Page {
    let Some(me) = me(&s, &headers).await else {
        return Ok(to_login());
    };
    let store = s.store.clone();
    let projects = blocking(move || store.project_list()).await?;
    let visible: Vec<_> = projects.into_iter().filter(|p| me.may_see(&p.id)).collect();
    Ok(views::project_list(&me, &visible).into_response())
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    csrf: String,
}

/// The login form, with a fresh CSRF token in a short-lived cookie (double submit): there is
/// no session to keep it in yet.
async fn login_form(State(s): State<Arc<AppState>>) -> Response {
    login_page(&s, StatusCode::OK, None)
}

fn login_page(s: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let token = session::random_token();
    let cookie = set_cookie(LOGIN_COOKIE, &token, std::time::Duration::from_secs(3600), dash(s).options.secure_cookies);
    let mut r = (status, views::login(&token, error)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn login(State(s): State<Arc<AppState>>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_secret(&form.csrf, expected) {
        return login_page(
            &s,
            StatusCode::FORBIDDEN,
            Some("The login form expired or came from another site: enter the key again."),
        );
    }
    let secret = form.key.trim().to_owned();
    if secret.is_empty() {
        return login_page(&s, StatusCode::UNPROCESSABLE_ENTITY, Some("Enter an API key."));
    }
    let who = match key_index(secret.as_bytes(), &s.key_hashes) {
        Some(n) => Who::FullKey(n),
        None => {
            let store = s.store.clone();
            let found = match blocking(move || store.key_by_secret(&secret)).await {
                Ok(found) => found,
                Err(Failure(e)) => return PageError::from(e).into_response(),
            };
            match found {
                None => {
                    return login_page(
                        &s,
                        StatusCode::UNAUTHORIZED,
                        Some(
                            "This key is not known to this server. Check it, or ask for one: defsync serve keys create.",
                        ),
                    );
                }
                Some(k) => match k.authorize(None, Access::Read, unix_now()) {
                    Ok(()) => Who::Stored(k.name),
                    Err(e) => return login_page(&s, StatusCode::UNAUTHORIZED, Some(&e.message)),
                },
            }
        }
    };
    let d = dash(&s);
    let id = d.sessions.create(who);
    let mut r = Redirect::to("/").into_response();
    for c in [
        set_cookie(SESSION_COOKIE, &id, SESSION_TTL, d.options.secure_cookies),
        set_cookie(LOGIN_COOKIE, "", std::time::Duration::ZERO, d.options.secure_cookies),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(s): State<Arc<AppState>>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Page {
    let me = require(&s, &headers).await?;
    me.check_csrf(&form.csrf)?;
    let d = dash(&s);
    if let Some(id) = session::cookie(&headers, SESSION_COOKIE) {
        d.sessions.remove(id);
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) =
        HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", std::time::Duration::ZERO, d.options.secure_cookies))
    {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// Everything the project page shows, read in one go.
pub(super) struct ProjectView {
    pub project: crate::api::Project,
    pub definitions: Vec<crate::store::DefinitionRow>,
    pub history: crate::store::HistoryPage,
    pub sync: crate::store::SyncView,
    pub outbox: Vec<crate::store::OutboxEntry>,
    /// The newest reports of runs, newest first.
    pub reports: Vec<crate::store::StoredRunReport>,
    /// Whether `serve` dispatches the pull workflow (the actions need it).
    pub dispatch: bool,
    pub git_web_url: String,
}

async fn project_page(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Page {
    let Some(me) = me(&s, &headers).await else {
        return Ok(to_login());
    };
    me.check(&project, Access::Read)?;
    let before = match q.get("before") {
        Some(b) => Some(b.parse::<u64>().map_err(|_| {
            PageError::new(400, "Bad link", format!("before must be a commit seq (a number), not {b:?}"))
        })?),
        None => None,
    };
    let store = s.store.clone();
    let dispatch = s.wake_dispatcher.is_some();
    let git_web_url = dash(&s).options.git_web_url.clone();
    let view = blocking(move || {
        let (project_info, _) = store.project(&project)?;
        Ok(ProjectView {
            definitions: store.definitions(&project)?,
            history: store.history(&project, before, HISTORY_PAGE)?,
            sync: store.sync_view(&project)?,
            outbox: store.dispatch_outbox(Some(&project))?,
            reports: store.run_reports(&project, RUN_REPORTS_SHOWN)?,
            project: project_info,
            dispatch,
            git_web_url,
        })
    })
    .await?;
    Ok(views::project_page(&me, &view, q.get("done").map(String::as_str)).into_response())
}

#[derive(Deserialize)]
struct KeyQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    /// The seq of the commit just saved, to say so.
    saved: Option<u64>,
}

/// An edit form, as first shown or shown again after a refused save.
pub(super) struct EditForm {
    pub project: String,
    /// The key being edited; empty for a new definition.
    pub orig_kind: String,
    pub orig_name: String,
    pub text: String,
    pub parent: Option<Commit>,
    pub message: String,
    /// The idempotency key of this save: a double submit makes one commit.
    pub nonce: String,
    pub error: Option<FormError>,
    /// The version at the head, when the head moved since the form was loaded.
    pub current: Option<String>,
    /// What the last action did.
    pub notice: Option<String>,
}

pub(super) struct FormError {
    pub message: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub details: Vec<String>,
}

async fn definition_page(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Page {
    let Some(me) = me(&s, &headers).await else {
        return Ok(to_login());
    };
    me.check(&project, Access::Read)?;
    let store = s.store.clone();
    let (p, kind, name) = (project.clone(), q.kind.clone(), q.name.clone());
    let new = q.kind.is_empty() && q.name.is_empty();
    let (definition, head) = blocking(move || store.definition(&p, &kind, &name)).await?;
    let text = match (&definition, new) {
        (Some(d), _) => crate::yaml::render(d),
        (None, true) => "kind: workflow\nname: \nspec: {}\n".to_owned(),
        (None, false) => {
            return Err(PageError::new(
                404,
                "Not found",
                format!("project {project:?} has no definition {}/{:?} at its head", q.kind, q.name),
            ));
        }
    };
    let form = EditForm {
        project,
        orig_kind: q.kind,
        orig_name: q.name,
        text,
        parent: head,
        message: String::new(),
        nonce: session::random_token(),
        error: None,
        current: None,
        notice: q.saved.map(|seq| format!("Saved as dashboard commit seq {seq}.")),
    };
    Ok(views::definition_page(&me, &form).into_response())
}

#[derive(Deserialize)]
struct SaveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    orig_kind: String,
    #[serde(default)]
    orig_name: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    nonce: String,
}

/// Commits `changes` as a dashboard commit on `parent`, exactly as `POST .../commits` would,
/// and wakes the dispatcher.
async fn dashboard_commit(
    s: &Arc<AppState>,
    project: &str,
    parent: Option<String>,
    message: String,
    changes: Vec<Change>,
    nonce: &str,
) -> Result<Commit, ApiError> {
    let body =
        CreateCommit { parent, message, origin: Origin { kind: OriginType::Dashboard, ..Default::default() }, changes };
    let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    let (store, project, key) = (s.store.clone(), project.to_owned(), format!("dashboard-{nonce}"));
    let commit = blocking(move || store.create_commit(&project, &bytes, Some(&key))).await.map_err(|Failure(e)| e)?;
    s.metrics.commit("dashboard");
    if let Some(wake) = &s.wake_dispatcher {
        wake.notify_one();
    }
    Ok(commit)
}

/// A nonce from a form: one of ours (43 URL-safe characters), or a new one.
fn form_nonce(given: &str) -> String {
    let ok = given.len() == 43 && given.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { given.to_owned() } else { session::random_token() }
}

/// The problems listed in a 422's `details`, as lines.
fn details_of(e: &ApiError) -> Vec<String> {
    e.extra
        .get("details")
        .and_then(|d| d.as_array())
        .map(|list| {
            list.iter()
                .map(|d| {
                    format!(
                        "{}/{}: {}",
                        d["kind"].as_str().unwrap_or_default(),
                        d["name"].as_str().unwrap_or_default(),
                        d["message"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn head_and_current(
    s: &Arc<AppState>,
    project: &str,
    kind: &str,
    name: &str,
) -> (Option<Commit>, Option<String>) {
    let (store, p, k, n) = (s.store.clone(), project.to_owned(), kind.to_owned(), name.to_owned());
    match blocking(move || store.definition(&p, &k, &n)).await {
        Ok((def, head)) => (head, Some(def.as_ref().map_or_else(|| "(deleted)\n".to_owned(), crate::yaml::render))),
        Err(_) => (None, None),
    }
}

async fn save(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    Form(f): Form<SaveForm>,
) -> Page {
    let me = require(&s, &headers).await?;
    me.check_csrf(&f.csrf)?;
    me.check(&project, Access::Write)?;
    let store = s.store.clone();
    let parent_id = (!f.parent.is_empty()).then(|| f.parent.clone());
    let parent = match &parent_id {
        Some(id) => {
            let (p, id) = (project.clone(), id.clone());
            Some(blocking(move || store.commit(&p, &id)).await?)
        }
        None => None,
    };
    let mut form = EditForm {
        project: project.clone(),
        orig_kind: f.orig_kind.clone(),
        orig_name: f.orig_name.clone(),
        text: f.text.clone(),
        parent,
        message: f.message.clone(),
        nonce: form_nonce(&f.nonce),
        error: None,
        current: None,
        notice: None,
    };
    // A browser sends a text area's line breaks as CRLF; files use LF.
    let text = f.text.replace("\r\n", "\n");
    form.text = text.clone();
    let definition = match crate::yaml::parse(text.as_bytes()) {
        Ok(d) => d,
        Err(e) => {
            form.error = Some(FormError { message: e.message, line: e.line, column: e.column, details: vec![] });
            form.nonce = session::random_token();
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, views::definition_page(&me, &form)).into_response());
        }
    };
    let renamed = !f.orig_kind.is_empty() && (f.orig_kind != definition.kind || f.orig_name != definition.name);
    let message = match f.message.trim() {
        "" if renamed => format!(
            "Rename {}/{} to {}/{} in the dashboard",
            f.orig_kind, f.orig_name, definition.kind, definition.name
        ),
        "" => format!("Edit {}/{} in the dashboard", definition.kind, definition.name),
        m => m.to_owned(),
    };
    let (kind, name) = (definition.kind.clone(), definition.name.clone());
    let mut changes =
        vec![Change::Put { kind: definition.kind, name: definition.name, spec: definition.spec, blob: None }];
    if renamed {
        changes.push(Change::Delete { kind: f.orig_kind.clone(), name: f.orig_name.clone() });
    }
    match dashboard_commit(&s, &project, parent_id, message, changes, &form.nonce).await {
        Ok(c) => Ok(Redirect::to(&format!(
            "/projects/{}/definition?kind={}&name={}&saved={}",
            enc(&project),
            enc(&kind),
            enc(&name),
            c.seq
        ))
        .into_response()),
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            form.nonce = session::random_token();
            if e.is("head_moved") {
                let (k, n) =
                    if f.orig_kind.is_empty() { (kind, name) } else { (f.orig_kind.clone(), f.orig_name.clone()) };
                let (head, current) = head_and_current(&s, &project, &k, &n).await;
                form.error = Some(FormError {
                    message: format!(
                        "Not saved: the project changed since you opened this page (its head is now seq {}). Your \
                         text is kept below. Compare it with the current version, then save again to replace it.",
                        head.as_ref().map_or(0, |h| h.seq)
                    ),
                    line: None,
                    column: None,
                    details: vec![],
                });
                form.parent = head;
                form.current = current;
            } else if e.is("empty_commit") {
                form.error = Some(FormError {
                    message: "Nothing to save: the text gives the definition it already has.".into(),
                    line: None,
                    column: None,
                    details: vec![],
                });
            } else {
                let details = details_of(&e);
                form.error =
                    Some(FormError { message: format!("Not saved: {}", e.message), line: None, column: None, details });
            }
            Ok((status, views::definition_page(&me, &form)).into_response())
        }
    }
}

async fn delete_page(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Page {
    let Some(me) = me(&s, &headers).await else {
        return Ok(to_login());
    };
    me.check(&project, Access::Write)?;
    let (store, p, k, n) = (s.store.clone(), project.clone(), q.kind.clone(), q.name.clone());
    let (definition, head) = blocking(move || store.definition(&p, &k, &n)).await?;
    if definition.is_none() {
        return Err(PageError::new(
            404,
            "Not found",
            format!("project {project:?} has no definition {}/{:?}", q.kind, q.name),
        ));
    }
    Ok(views::delete_page(&me, &project, &q.kind, &q.name, head.as_ref(), &session::random_token(), None)
        .into_response())
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    nonce: String,
}

async fn delete(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    Form(f): Form<DeleteForm>,
) -> Page {
    let me = require(&s, &headers).await?;
    me.check_csrf(&f.csrf)?;
    me.check(&project, Access::Write)?;
    let parent = (!f.parent.is_empty()).then(|| f.parent.clone());
    let message = format!("Delete {}/{} in the dashboard", f.kind, f.name);
    let changes = vec![Change::Delete { kind: f.kind.clone(), name: f.name.clone() }];
    let nonce = form_nonce(&f.nonce);
    match dashboard_commit(&s, &project, parent, message, changes, &nonce).await {
        Ok(c) => {
            Ok(Redirect::to(&format!("/projects/{}?done=deleted-{}#history", enc(&project), c.seq)).into_response())
        }
        Err(e) => {
            let (head, _) = head_and_current(&s, &project, &f.kind, &f.name).await;
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = if e.is("head_moved") {
                format!(
                    "Not deleted: the project changed since you opened this page (its head is now seq {}). Check \
                     the definition, then confirm again.",
                    head.as_ref().map_or(0, |h| h.seq)
                )
            } else {
                format!("Not deleted: {}", e.message)
            };
            let page = views::delete_page(
                &me,
                &project,
                &f.kind,
                &f.name,
                head.as_ref(),
                &session::random_token(),
                Some(&message),
            );
            Ok((status, page).into_response())
        }
    }
}

async fn sync_now(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Page {
    let me = require(&s, &headers).await?;
    me.check_csrf(&f.csrf)?;
    me.check(&project, Access::Write)?;
    let Some(wake) = s.wake_dispatcher.clone() else {
        return Err(no_dispatch());
    };
    let (store, p) = (s.store.clone(), project.clone());
    blocking(move || store.queue_dispatch(&p).map(drop)).await?;
    wake.notify_one();
    Ok(Redirect::to(&format!("/projects/{}?done=queued#history", enc(&project))).into_response())
}

async fn retry(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
    Form(f): Form<CsrfForm>,
) -> Page {
    let me = require(&s, &headers).await?;
    me.check_csrf(&f.csrf)?;
    me.check(&project, Access::Write)?;
    let Some(wake) = s.wake_dispatcher.clone() else {
        return Err(no_dispatch());
    };
    let store = s.store.clone();
    let p = project.clone();
    blocking(move || {
        // A dispatch of another project is not this page's to retry.
        if store.dispatch_entry(id)?.is_none_or(|e| e.project != p) {
            return Err(ApiError::new(404, "not_found", format!("project {p:?} has no dispatch {id}")));
        }
        store.retry_dispatch(id).map(drop)
    })
    .await?;
    wake.notify_one();
    Ok(Redirect::to(&format!("/projects/{}?done=retried#history", enc(&project))).into_response())
}

fn no_dispatch() -> PageError {
    PageError::new(
        409,
        "No dispatch configured",
        "this server does not dispatch the pull workflow: start serve with --dispatch-repository and \
         DEFSYNC_DISPATCH_TOKEN",
    )
}

/// Percent-encodes a query or path value (everything but RFC 3986's unreserved characters).
pub(super) fn enc(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(enc("a b/<c>&d"), "a%20b%2F%3Cc%3E%26d");
        assert_eq!(enc("é"), "%C3%A9");
        assert_eq!(enc("A-z_0.~"), "A-z_0.~");
    }

    #[test]
    fn only_our_nonces_are_kept() {
        let ours = session::random_token();
        assert_eq!(form_nonce(&ours), ours);
        assert_ne!(form_nonce("short"), "short");
        assert_ne!(form_nonce(&"<".repeat(43)), "<".repeat(43));
    }
}
