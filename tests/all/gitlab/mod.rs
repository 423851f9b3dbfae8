//! Tests: the GitLab layer against a stand-in backed by a real bare repository, whose traffic
//! is checked against GitLab's OpenAPI description and go-gitlab's recorded answers.

mod autodispatch;
mod delivery;
mod schema;
pub(crate) mod standin;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use defsync::forge::gitlab::{
    ErrorKind, GitLab, GitLabOptions, MergeRequestSpec, OntoBranch, PassAs, Project, SUMMARY_MARKER, TokenKind, actions,
};
use defsync::git::TreeEdit;
use serde_json::json;
use standin::{Action, PROJECT_ID, PROJECT_PATH, StandIn, TRIGGER_TOKEN};

fn project() -> Project {
    Project(PROJECT_PATH.into())
}

/// A client for the stand-in, with waits short enough for tests.
fn client(s: &StandIn, token: &str) -> GitLab {
    let mut o = GitLabOptions::new(token, TokenKind::Access, s.url.clone());
    o.retry_backoff = Duration::from_millis(10);
    GitLab::new(o).unwrap()
}

fn yaml(i: usize, version: &str) -> String {
    format!("kind: dashboard\nname: d{i}\nspec:\n  title: \"Dashboard {i} {version}\"\n")
}

/// The `actions[]` of `edits` onto `parent`, with existence and last commits read from the bare
/// repository as the forge reads them from the checkout.
fn plan_actions(s: &StandIn, parent: &str, edits: &[TreeEdit]) -> Vec<defsync::forge::gitlab::CommitAction> {
    let existing: HashSet<String> =
        s.git(&["ls-tree", "-r", "--name-only", parent]).lines().map(str::to_owned).collect();
    let last: HashMap<String, String> =
        existing.iter().map(|p| (p.clone(), s.git(&["log", "-1", "--format=%H", parent, "--", p]))).collect();
    actions(edits, &existing, Some(&last))
}

#[track_caller]
fn assert_same_files(actual: BTreeMap<String, String>, expected: BTreeMap<String, String>) {
    let differing: Vec<&String> =
        expected.keys().chain(actual.keys()).filter(|k| actual.get(*k) != expected.get(*k)).take(5).collect();
    assert!(differing.is_empty(), "{} vs {} files; first differences: {differing:?}", actual.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_commit_of_1000_files_takes_two_requests() {
    let s = StandIn::start().await;
    let mut seed: Vec<(String, String)> =
        (0..700).map(|i| (format!("defs/dashboard/d{i}.yaml"), yaml(i, "v1"))).collect();
    seed.push(("README.md".into(), "# defs\n".into()));
    let tip = s.commit_files("main", &seed, "seed");

    // 400 updates, 300 deletions, 300 additions.
    let mut edits = Vec::new();
    let mut expected: BTreeMap<String, String> = seed.iter().cloned().collect();
    for i in 0..400 {
        let (path, content) = (format!("defs/dashboard/d{i}.yaml"), yaml(i, "v2"));
        expected.insert(path.clone(), content.clone());
        edits.push(TreeEdit::Write { path, content: content.into_bytes() });
    }
    for i in 400..700 {
        let path = format!("defs/dashboard/d{i}.yaml");
        expected.remove(&path);
        edits.push(TreeEdit::Remove { path });
    }
    for i in 700..1000 {
        let (path, content) = (format!("defs/alert/a{i}.yaml"), yaml(i, "new"));
        expected.insert(path.clone(), content.clone());
        edits.push(TreeEdit::Write { path, content: content.into_bytes() });
    }
    let acts = tokio::task::block_in_place(|| plan_actions(&s, &tip, &edits));
    let gl = client(&s, "glpat-maintainer");
    let made = gl.commit_onto_branch(&project(), "main", &tip, "defsync: pull c42", &acts).await.unwrap();
    let OntoBranch::Made(sha) = made else { panic!("{made:?}") };

    assert!(gl.requests() <= 3, "{} requests", gl.requests());
    let calls: Vec<String> = s.exchanges().iter().map(|e| format!("{} {} {}", e.method, e.path, e.status)).collect();
    assert_eq!(
        calls,
        [
            format!("GET /projects/{PROJECT_PATH}/repository/branches/main 200"),
            format!("POST /projects/{PROJECT_PATH}/repository/commits 200"),
        ]
    );
    let body = s.exchanges()[1].request.clone().unwrap();
    let actions = body["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1000);
    let count = |a: &str| actions.iter().filter(|x| x["action"] == a).count();
    assert_eq!((count("update"), count("delete"), count("create")), (400, 300, 300));
    // Every update and deletion carries the guard; no start_sha on the existing branch.
    assert!(actions.iter().filter(|a| a["action"] != "create").all(|a| a["last_commit_id"] == json!(tip)));
    assert!(body.get("start_sha").is_none() && body.get("force").is_none(), "{}", body["branch"]);

    s.git(&["fsck", "--strict", "--no-dangling"]);
    assert_eq!(s.git(&["rev-parse", "main"]), sha);
    assert_eq!(s.git(&["rev-parse", "main^"]), tip);
    let actual: BTreeMap<String, String> = tokio::task::block_in_place(|| s.files_at("main")).into_iter().collect();
    assert_same_files(actual, expected);
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_that_moved_is_reported_and_nothing_is_lost() {
    let s = StandIn::start().await;
    let tip =
        s.commit_files("main", &[("defs/a.yaml".into(), yaml(1, "v1")), ("other.txt".into(), "1\n".into())], "seed");
    let edits = [TreeEdit::Write { path: "defs/a.yaml".into(), content: yaml(1, "v2").into_bytes() }];
    let acts = tokio::task::block_in_place(|| plan_actions(&s, &tip, &edits));
    let gl = client(&s, "glpat-maintainer");

    // Moved before the read: nothing is written.
    let moved = s.commit_files("main", &[("other.txt".into(), "2\n".into())], "concurrent");
    assert_eq!(gl.commit_onto_branch(&project(), "main", &tip, "m", &acts).await.unwrap(), OntoBranch::Moved);
    assert_eq!(s.git(&["rev-parse", "main"]), moved);

    // Moved between the read and the commit, touching the same file: GitLab refuses the whole
    // commit (last_commit_id) and the branch stays where the other writer put it.
    let acts = tokio::task::block_in_place(|| plan_actions(&s, &moved, &edits));
    s.inject(
        "post",
        "/repository/commits",
        Action::PushFiles { branch: "main".into(), files: vec![("defs/a.yaml".into(), yaml(1, "theirs"))] },
    );
    assert_eq!(gl.commit_onto_branch(&project(), "main", &moved, "m", &acts).await.unwrap(), OntoBranch::Moved);
    let theirs = s.git(&["rev-parse", "main"]);
    assert_ne!(theirs, moved);
    assert_eq!(s.git(&["show", "main:defs/a.yaml"]) + "\n", yaml(1, "theirs"));
    let refused = s.exchanges().into_iter().find(|e| e.method == "POST").unwrap();
    assert_eq!(refused.status, 400);

    // Moved between the read and the commit, touching another file: the commit lands on top,
    // nothing of the other push is lost, and the answer says to re-plan.
    let acts = tokio::task::block_in_place(|| plan_actions(&s, &theirs, &edits));
    s.inject(
        "post",
        "/repository/commits",
        Action::PushFiles { branch: "main".into(), files: vec![("other.txt".into(), "3\n".into())] },
    );
    assert_eq!(gl.commit_onto_branch(&project(), "main", &theirs, "m", &acts).await.unwrap(), OntoBranch::Moved);
    assert_eq!(s.git(&["show", "main:other.txt"]), "3");
    assert_eq!(s.git(&["show", "main:defs/a.yaml"]) + "\n", yaml(1, "v2"));
    assert_eq!(s.git(&["rev-list", "--count", &format!("{theirs}..main")]), "2");
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_request_is_opened_updated_and_closed_with_its_branch() {
    let s = StandIn::start().await;
    let tip = s.commit_files("main", &[("defs/a.yaml".into(), yaml(1, "v1"))], "seed");
    let gl = client(&s, "glpat-developer");
    let p = project();
    let branch = defsync::forge::default_pr_branch("p1");
    let labels = vec!["defsync".to_owned(), "platform".to_owned()];
    let edit = |v: &str| vec![TreeEdit::Write { path: "defs/a.yaml".into(), content: yaml(1, v).into_bytes() }];

    let acts = tokio::task::block_in_place(|| plan_actions(&s, &tip, &edit("v2")));
    let c1 = gl.create_commit(&p, &branch, "m1", &acts, Some(&tip), true).await.unwrap();
    assert_eq!(c1.parent_ids, std::slice::from_ref(&tip));
    let spec = MergeRequestSpec {
        target_branch: "main",
        source_branch: &branch,
        commit: &c1.id,
        title: "defsync: platform changes to p1",
        description: "first",
        labels: &labels,
    };
    let mr = gl.open_or_update_mr(&p, &spec).await.unwrap();
    assert!(mr.created);
    assert_eq!(mr.iid, 1);
    assert_eq!(mr.web_url, format!("{}/{PROJECT_PATH}/-/merge_requests/1", s.url.trim_end_matches("/api/v4")));
    assert_eq!(s.git(&["rev-parse", "refs/heads/defsync/p1"]), c1.id);
    assert_eq!(s.git(&["rev-parse", "main"]), tip, "the target branch does not move");
    // The lookup for an open MR asks by source branch and state.
    let list = s.exchanges().into_iter().find(|e| e.method == "GET" && e.path.ends_with("/merge_requests")).unwrap();
    assert!(list.query.contains(&("source_branch".into(), "defsync/p1".into())), "{:?}", list.query);
    assert!(list.query.contains(&("state".into(), "opened".into())));

    // A second pull: a new commit from main's tip replaces the branch, and the same MR is edited.
    let c2 = gl.create_commit(&p, &branch, "m2", &acts_v(&s, &tip, &edit("v3")), Some(&tip), true).await.unwrap();
    assert_eq!(c2.parent_ids, std::slice::from_ref(&tip));
    let mr2 = gl
        .open_or_update_mr(&p, &MergeRequestSpec { commit: &c2.id, description: "second", ..spec.clone() })
        .await
        .unwrap();
    assert!(!mr2.created);
    assert_eq!(mr2.iid, mr.iid);
    {
        let st = s.state.lock().unwrap();
        assert_eq!(st.mrs.len(), 1);
        assert_eq!(st.mrs[0].description, "second");
        assert_eq!(st.mrs[0].labels, labels);
    }

    // The summary note: one note, updated in place by every run.
    let n1 = gl.upsert_summary_note(&p, mr.iid, "### run 1").await.unwrap();
    let n2 = gl.upsert_summary_note(&p, mr.iid, "### run 2").await.unwrap();
    assert_eq!(n1, n2);
    {
        let st = s.state.lock().unwrap();
        assert_eq!(st.notes.len(), 1);
        assert_eq!(st.notes[0].body, format!("{SUMMARY_MARKER}\n### run 2"));
    }

    // Past the first page of notes: the marked note is still found, never a second one made.
    {
        let mut st = s.state.lock().unwrap();
        for i in 0..150 {
            st.notes.push(standin::Note { id: 10_000 + i, iid: mr.iid, body: format!("review comment {i}") });
        }
        let marked = st.notes.remove(0);
        st.notes.push(marked);
    }
    assert_eq!(gl.upsert_summary_note(&p, mr.iid, "### run 3").await.unwrap(), n1);
    assert_eq!(s.state.lock().unwrap().notes.iter().filter(|n| n.body.starts_with(SUMMARY_MARKER)).count(), 1);

    // The platform equals main again: the MR is closed and the branch deleted.
    assert_eq!(gl.close_mr_and_delete_branch(&p, &branch).await.unwrap(), Some(1));
    assert_eq!(s.state.lock().unwrap().mrs[0].state, "closed");
    assert!(s.git(&["branch", "--list", "defsync/p1"]).is_empty());
    assert_eq!(gl.close_mr_and_delete_branch(&p, &branch).await.unwrap(), None);
    s.assert_conforms();
}

fn acts_v(s: &StandIn, parent: &str, edits: &[TreeEdit]) -> Vec<defsync::forge::gitlab::CommitAction> {
    tokio::task::block_in_place(|| plan_actions(s, parent, edits))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_merge_request_is_never_made() {
    let s = StandIn::start().await;
    let tip = s.commit_files("main", &[("defs/a.yaml".into(), yaml(1, "v1"))], "seed");
    let gl = client(&s, "glpat-maintainer");
    let branch = "defsync/p1";
    let c = gl
        .create_commit(
            &project(),
            branch,
            "m",
            &acts_v(&s, &tip, &[TreeEdit::Remove { path: "defs/a.yaml".into() }]),
            Some(&tip),
            true,
        )
        .await
        .unwrap();
    let spec = MergeRequestSpec {
        target_branch: "main",
        source_branch: branch,
        commit: &c.id,
        title: "t",
        description: "d",
        labels: &[],
    };
    // Another run opened it between our lookup and our create: GitLab answers 409, and the
    // client takes the open one.
    s.inject("get", "/merge_requests", Action::Answer { status: 200, body: json!([]) });
    let first = gl.open_or_update_mr(&project(), &spec).await.unwrap();
    s.inject("get", "/merge_requests", Action::Answer { status: 200, body: json!([]) });
    let second = gl.open_or_update_mr(&project(), &spec).await.unwrap();
    assert_eq!(first.iid, second.iid);
    assert_eq!(s.state.lock().unwrap().mrs.len(), 1);
    let refused = s.exchanges().into_iter().find(|e| e.status == 409).expect("GitLab's 409");
    assert!(refused.response.unwrap().to_string().contains("Another open merge request already exists"));
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_fix() {
    let s = StandIn::start().await;
    let tip = s.commit_files("main", &[("defs/a.yaml".into(), yaml(1, "v1"))], "seed");
    let acts = acts_v(&s, &tip, &[TreeEdit::Remove { path: "defs/a.yaml".into() }]);

    // write_repository only: git push works, the API does not.
    let e = client(&s, "glpat-writerepo").commit_onto_branch(&project(), "main", &tip, "m", &acts).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InsufficientScope);
    assert!(e.to_string().contains("`write_repository` allows `git push` but not API commits"), "{e}");

    // A Developer on the protected main.
    let e = client(&s, "glpat-developer").commit_onto_branch(&project(), "main", &tip, "m", &acts).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BranchProtected);
    assert!(e.to_string().contains("--delivery pull-request"), "{e}");

    let e = client(&s, "glpat-expired").branch_head(&project(), "main").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(e.to_string().contains("has expired"), "{e}");
    assert_eq!(s.git(&["rev-parse", "main"]), tip);
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_passes_project_and_commit_as_variables_or_inputs() {
    let s = StandIn::start().await;
    s.commit_files("main", &[("README.md".into(), "x\n".into())], "seed");
    let mut o = GitLabOptions::new(TRIGGER_TOKEN, TokenKind::Trigger, s.url.clone());
    o.retries = 0;
    let gl = GitLab::new(o).unwrap();
    let p = Project(PROJECT_ID.to_string());
    let values = [("project", "p1"), ("commit", "c9")];
    let run = gl.trigger_pipeline(&p, TRIGGER_TOKEN, "main", &values, PassAs::Variables).await.unwrap();
    assert!(run.web_url.unwrap().ends_with(&format!("/-/pipelines/{}", run.id)));
    gl.trigger_pipeline(&p, TRIGGER_TOKEN, "main", &values, PassAs::Inputs).await.unwrap();
    {
        let st = s.state.lock().unwrap();
        assert_eq!(st.pipelines[0]["variables"], json!({"DEFSYNC_PROJECT_ID": "p1", "DEFSYNC_COMMIT_ID": "c9"}));
        assert_eq!(st.pipelines[1]["inputs"], json!({"project-id": "p1", "commit-id": "c9"}));
        assert_eq!(st.pipelines[0]["ref"], "main");
    }
    // The trigger token travels in the body only: no token header.
    let e = gl.trigger_pipeline(&p, "glptt-wrong", "main", &values, PassAs::Variables).await.unwrap_err();
    assert_eq!(e.status, Some(404));
    s.assert_conforms();
}
