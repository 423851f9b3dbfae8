//! `defsync pull --forge gitlab` end to end through the real binary: an API commit onto the
//! branch, a merge request opened, updated and closed, a conflict MR, a branch that moves
//! mid-run, `ci.skip`, and `defsync dispatch --forge gitlab`. The stand-in's bare repository is
//! the checkout's origin, so `git fetch` and the API see the same real objects.

use serde_json::json;

use super::standin::{Action, PROJECT_PATH, StandIn, TRIGGER_TOKEN};
use crate::support::{Env, Run};

/// An embedded-store environment whose origin is the stand-in's bare repository.
async fn setup() -> (StandIn, Env) {
    let s = StandIn::start().await;
    let env = tokio::task::spawn_blocking(|| {
        let env = Env::new();
        env.dashboard_put("workflow", "notify", json!({"channel": "#sales"}));
        env
    })
    .await
    .unwrap();
    let bare = s.bare.to_str().unwrap().to_owned();
    env.git(&["push", "--quiet", &bare, "main"]);
    env.git(&["remote", "set-url", "origin", &bare]);
    env.git(&["fetch", "--quiet", "origin"]);
    (s, env)
}

/// Runs a command as a GitLab job would: the forge from `GITLAB_CI`, the API root from
/// `CI_API_V4_URL`, the project from `CI_PROJECT_ID`... here given as the path, and the token
/// in `GITLAB_TOKEN`.
fn run_with(s: &StandIn, env: &Env, command: &str, extra: &[&str], token: &str) -> Run {
    let mut args = vec![command, "--json"];
    args.extend_from_slice(extra);
    env.defsync_in(
        &env.work,
        &args,
        &[
            ("GITLAB_CI", "true"),
            ("GITLAB_TOKEN", token),
            ("CI_API_V4_URL", s.url.as_str()),
            ("CI_PROJECT_ID", PROJECT_PATH),
        ],
    )
}

fn pull(s: &StandIn, env: &Env, extra: &[&str]) -> Run {
    run_with(s, env, "pull", extra, "glpat-maintainer")
}

fn gitlab_requests(s: &StandIn) -> usize {
    s.exchanges().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_commits_through_the_api_onto_the_branch() {
    let (s, env) = setup().await;
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.changes(), ["git add workflow/notify"]);
    let sha = r.json()["git_commit"].as_str().unwrap().to_owned();
    assert_eq!(s.git(&["rev-parse", "main"]), sha);
    s.git(&["fsck", "--strict"]);
    assert!(s.git(&["ls-tree", "-r", "--name-only", "main"]).contains("defs/workflow/notify.yaml"));
    // The checkout followed: GitLab's commit has the tree defsync verified (the engine compares).
    assert_eq!(env.head(), sha);
    assert!(!r.stdout.contains("glpat-maintainer") && !r.stderr.contains("glpat-maintainer"));
    let again = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(again.status(), "in_sync", "{again:#?}");
    // The push pipeline that the pull commit starts on GitLab is a no-op.
    assert_eq!(tokio::task::block_in_place(|| run_with(&s, &env, "push", &[], "glpat-maintainer")).status(), "in_sync");
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_other_than_the_verified_one_is_refused() {
    let (s, env) = setup().await;
    // A GitLab that writes something defsync did not ask for.
    s.inject(
        "post",
        "/repository/commits",
        Action::ExtraFile { path: "defs/intruder.yaml".into(), content: "x: 1\n".into() },
    );
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("with another tree than the one defsync verified"), "{}", r.stderr);
    // The platform's base did not move onto the unverified commit, and the checkout stayed.
    assert_ne!(env.head(), s.git(&["rev-parse", "main"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_1000_changed_definitions_takes_at_most_3_gitlab_requests() {
    let (s, env) = setup().await;
    let put_all = |version: &str| {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<String> = (0..1000)
            .map(|i| {
                let f = dir.path().join(format!("d{i}.yaml"));
                std::fs::write(&f, format!("kind: dashboard\nname: d{i}\nspec:\n  title: \"{version}\"\n")).unwrap();
                f.to_str().unwrap().to_owned()
            })
            .collect();
        let mut args = vec!["dashboard", "put"];
        args.extend(files.iter().map(String::as_str));
        env.defsync(&args).ok();
    };
    tokio::task::block_in_place(|| put_all("v1"));
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.changes().len(), 1001);
    let first = gitlab_requests(&s);
    assert!(first <= 3, "{first} GitLab requests: {:#?}", s.exchanges().iter().map(|e| &e.path).collect::<Vec<_>>());

    // 1,000 updates: each carries its file's last commit as the guard.
    tokio::task::block_in_place(|| put_all("v2"));
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.changes().len(), 1000);
    let second = gitlab_requests(&s) - first;
    assert!(second <= 3, "{second} GitLab requests");
    let commit = s.exchanges().into_iter().rfind(|e| e.method == "POST").unwrap();
    let actions = commit.request.unwrap()["actions"].as_array().unwrap().clone();
    assert_eq!(actions.len(), 1000);
    assert!(actions.iter().all(|a| a["action"] == "update" && a["last_commit_id"].is_string()));
    assert_eq!(env.head(), s.git(&["rev-parse", "main"]));
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_that_moves_mid_run_is_re_planned_and_no_commit_is_lost() {
    let (s, env) = setup().await;
    // Between defsync's read of the branch and its commit, a colleague pushes another file.
    s.inject(
        "post",
        "/repository/commits",
        Action::PushFiles { branch: "main".into(), files: vec![("docs/notes.md".into(), "colleague\n".into())] },
    );
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    let tip = s.git(&["rev-parse", "main"]);
    // Both the colleague's file and the definition are on main; the run re-planned and found
    // the definition already there.
    assert_eq!(s.git(&["show", "main:docs/notes.md"]), "colleague");
    assert!(s.git(&["ls-tree", "-r", "--name-only", "main"]).contains("defs/workflow/notify.yaml"));
    assert!(s.git(&["log", "--format=%an", "main"]).contains("Other Writer"));
    assert_eq!(env.head(), tip, "the checkout followed the branch");
    let again = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(again.status(), "in_sync", "{again:#?}");
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_request_is_opened_updated_and_closed() {
    let (s, env) = setup().await;
    let main_before = s.git(&["rev-parse", "main"]);
    // A Developer may not push to the protected main, but may deliver through an MR.
    let mr_pull = |extra: &[&str]| {
        let mut args = vec!["--delivery", "merge-request", "--commit-via", "api"];
        args.extend_from_slice(extra);
        tokio::task::block_in_place(|| run_with(&s, &env, "pull", &args, "glpat-developer"))
    };
    let r = mr_pull(&["--pr-labels", "defsync,sync"]);
    assert_eq!(r.code, 0, "{r:#?}");
    let mr = r.json()["pull_request"].clone();
    assert_eq!(mr["state"], "opened", "{mr}");
    assert_eq!(mr["number"], 1);
    assert_eq!(s.git(&["rev-parse", "main"]), main_before, "nothing lands on main without review");
    assert_eq!(r.json()["git_commit"].as_str().unwrap(), s.git(&["rev-parse", "defsync/p1"]));
    {
        let st = s.state.lock().unwrap();
        let open: Vec<_> = st.mrs.iter().filter(|m| m.state == "opened").collect();
        assert_eq!(open.len(), 1);
        assert!(open[0].description.contains("notify") && open[0].description.contains("merge request"));
        assert_eq!(open[0].labels, ["defsync", "sync"]);
    }
    tokio::task::block_in_place(|| env.dashboard_put("workflow", "notify", json!({"channel": "#deals"})));
    let r = mr_pull(&[]);
    assert_eq!(r.json()["pull_request"]["state"], "updated", "{r:#?}");
    assert_eq!(s.state.lock().unwrap().mrs.len(), 1);
    // Merge it (main fast-forwards to the MR branch), then pull: the MR is closed, its branch gone.
    let head = s.git(&["rev-parse", "defsync/p1"]);
    s.git(&["update-ref", "refs/heads/main", &head]);
    let r = mr_pull(&[]);
    assert_eq!(r.status(), "in_sync", "{r:#?}");
    assert_eq!(r.json()["pull_request"]["state"], "closed", "{r:#?}");
    assert!(s.git(&["branch", "--list", "defsync/p1"]).is_empty());
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_goes_on_the_merge_request_branch_and_main_is_untouched() {
    let (s, env) = setup().await;
    tokio::task::block_in_place(|| pull(&s, &env, &[]).ok());
    let f = "defs/workflow/notify.yaml";
    env.write(f, &env.read(f).replace("sales", "git-side"));
    env.git(&["commit", "--quiet", "-am", "git edit"]);
    env.git(&["push", "--quiet", "origin", "main"]);
    tokio::task::block_in_place(|| env.dashboard_put("workflow", "notify", json!({"channel": "#platform-side"})));
    let main_before = s.git(&["rev-parse", "main"]);
    // Git delivery of the MR branch: a force push of defsync's own branch, then the API.
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--delivery", "merge-request"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.json()["conflicts"][0]["resolution"], "written");
    assert_eq!(s.git(&["rev-parse", "main"]), main_before);
    assert!(s.git(&["show", &format!("defsync/p1:{f}")]).contains("platform-side"));
    let st = s.state.lock().unwrap();
    let description = &st.mrs.iter().find(|m| m.state == "opened").unwrap().description;
    assert!(description.contains("### Conflicts") && description.contains("merge request"), "{description}");
    drop(st);
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_skip_pushes_with_the_push_option_and_api_commits_say_skip_ci() {
    let (s, env) = setup().await;
    // The origin records the push options it receives, as GitLab reads `ci.skip` from them.
    s.git(&["config", "receive.advertisePushOptions", "true"]);
    let log = s.bare.join("push-options.log");
    let hook = s.bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >/dev/null\ni=0\nwhile [ $i -lt \"${{GIT_PUSH_OPTION_COUNT:-0}}\" ]; do eval \"echo \\$GIT_PUSH_OPTION_$i\" >> '{}'; i=$((i+1)); done\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--ci-skip"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ci.skip\n");
    // Through the API: `[skip ci]` on the subject.
    tokio::task::block_in_place(|| env.dashboard_put("workflow", "notify", json!({"channel": "#api"})));
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--ci-skip", "--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(s.git(&["log", "-1", "--format=%s", "main"]).ends_with("[skip ci]"));
    // And were the pipeline to run anyway, its push would be a no-op.
    assert_eq!(tokio::task::block_in_place(|| run_with(&s, &env, "push", &[], "glpat-maintainer")).status(), "in_sync");
    // On GitHub the option makes no sense, and says why.
    let gh = tokio::task::block_in_place(|| env.run("pull", &["--forge", "github", "--ci-skip"]));
    assert_eq!(gh.code, 2, "{gh:#?}");
    assert!(gh.stderr.contains("--ci-skip is for GitLab"), "{}", gh.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_branch_refuses_a_developer_with_the_fix() {
    let (s, env) = setup().await;
    let r = tokio::task::block_in_place(|| run_with(&s, &env, "pull", &["--commit-via", "api"], "glpat-developer"));
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("You are not allowed to push into this branch"), "{}", r.stderr);
    assert!(r.stderr.contains("--delivery pull-request"), "{}", r.stderr);
    assert!(!r.stderr.contains("glpat-developer"));
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_triggers_the_pull_pipeline() {
    let (s, env) = setup().await;
    let r = tokio::task::block_in_place(|| {
        env.defsync_in(
            &env.work,
            &[
                "dispatch",
                "--forge",
                "gitlab",
                "--gitlab-project",
                PROJECT_PATH,
                "--ref",
                "main",
                "--project",
                "p1",
                "--commit",
                "c7",
            ],
            &[("DEFSYNC_GITLAB_TRIGGER_TOKEN", TRIGGER_TOKEN), ("DEFSYNC_GITLAB_URL", s.url.as_str())],
        )
    });
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("started pipeline"), "{}", r.stderr);
    assert!(!r.stderr.contains(TRIGGER_TOKEN));
    let st = s.state.lock().unwrap();
    assert_eq!(st.pipelines.len(), 1);
    assert_eq!(st.pipelines[0]["variables"], json!({"DEFSYNC_PROJECT_ID": "p1", "DEFSYNC_COMMIT_ID": "c7"}));
    drop(st);
    s.assert_conforms();
}

/// `defsync doctor --forge gitlab --json` with `token` (None: none) and `extra` arguments; the
/// rows as `check → (outcome, result, fix)`.
fn doctor(
    s: &StandIn,
    env: &Env,
    token: Option<(&str, &str)>,
    extra: &[&str],
) -> (i32, std::collections::BTreeMap<String, (String, String, String)>, String) {
    let mut args = vec!["doctor", "--forge", "gitlab", "--json", "--gitlab-project", PROJECT_PATH];
    args.extend_from_slice(extra);
    let mut vars = vec![("DEFSYNC_GITLAB_URL", s.url.as_str())];
    if let Some(t) = token {
        vars.push(t);
    }
    let r = env.defsync_in(&env.work, &args, &vars);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:#?}"));
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let map = rows.iter().map(|c| (s(&c["check"]), (s(&c["outcome"]), s(&c["result"]), s(&c["fix"])))).collect();
    (r.code, map, r.stdout + &r.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reads_token_role_protection_and_names_each_fix() {
    let (s, env) = setup().await;
    let all = |token: &str, extra: &[&str]| {
        tokio::task::block_in_place(|| doctor(&s, &env, Some(("GITLAB_TOKEN", token)), extra))
    };

    // A Maintainer's project access token with `api`: everything a pull needs.
    let (code, rows, out) = all("glpat-maintainer", &["--commit-via", "api"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(rows["GitLab instance"].1, format!("{} (--gitlab-url)", s.url.trim_end_matches("/api/v4")));
    assert_eq!(rows["token scopes"].0, "ok", "{out}");
    assert_eq!(rows["token expiry"], ("ok".into(), "expires on 2099-01-01".into(), String::new()));
    assert_eq!(rows["role on the project"].1, format!("Maintainer (40) on {PROJECT_PATH}"));
    assert_eq!(rows["token type"].1, "a project access token of this project");
    assert_eq!(
        rows["branch protection"],
        ("ok".into(), "main is protected: Maintainers and above may push".into(), String::new())
    );
    assert!(!out.contains("glpat-maintainer"));

    // `write_repository` without `api`: git push works, API commits and MRs do not.
    let (code, rows, out) = all("glpat-writerepo", &["--commit-via", "api"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(rows["token scopes"].0, "fail");
    assert!(rows["token scopes"].2.contains("`write_repository` allows `git push` but not API commits"), "{out}");

    // A Developer on the protected main: suggest MR delivery. With it, nothing fails.
    let (code, rows, out) = all("glpat-developer", &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(rows["role on the project"].1, format!("Developer (30) on {PROJECT_PATH}"));
    assert_eq!(rows["branch protection"].0, "fail");
    assert!(rows["branch protection"].2.contains("--delivery merge-request"), "{out}");
    assert!(rows["token type"].1.contains("needs Maintainer"), "{out}");
    let (code, _, out) = all("glpat-developer", &["--delivery", "merge-request", "--commit-via", "api"]);
    assert_eq!(code, 0, "{out}");

    // An expired token.
    let (code, rows, out) = all("glpat-expired", &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(rows["GitLab token"].0, "fail");
    assert!(rows["GitLab token"].1.contains("Token is expired"), "{out}");
    assert!(rows["GitLab token"].2.contains("create a new project access token"), "{out}");

    // A personal access token without an expiry date.
    let (code, rows, out) = all("glpat-personal", &["--commit-via", "api"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(rows["token expiry"].0, "warn");
    assert_eq!(rows["token type"].1, "a personal or group access token");
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_a_job_token_says_what_it_may_not_do() {
    let (s, env) = setup().await;
    // Git delivery: the job token may push only where the project allows it.
    let (code, rows, out) = tokio::task::block_in_place(|| doctor(&s, &env, Some(("CI_JOB_TOKEN", "job-token")), &[]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(rows["GitLab token"].0, "warn");
    assert_eq!(rows["job token may push"].0, "unknown");
    assert!(rows["job token may push"].2.contains("Allow Git push requests to the repository"), "{out}");
    // API delivery: impossible with a job token.
    let (code, rows, out) =
        tokio::task::block_in_place(|| doctor(&s, &env, Some(("CI_JOB_TOKEN", "job-token")), &["--commit-via", "api"]));
    assert_eq!(code, 1, "{out}");
    assert!(rows["GitLab token"].2.contains("cannot make API commits"), "{out}");
    assert!(!out.contains("job-token\""));
    // A CA file that holds no certificate is refused before any request.
    let bad = env.work.join("ca.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let (code, rows, out) = tokio::task::block_in_place(|| {
        doctor(&s, &env, Some(("GITLAB_TOKEN", "glpat-maintainer")), &["--gitlab-ca-cert", bad.to_str().unwrap()])
    });
    assert_eq!(code, 1, "{out}");
    assert!(rows["GitLab client"].1.contains("holds no PEM certificate"), "{out}");
    s.assert_conforms();
}

#[test]
fn the_gitlab_token_reaches_git_as_basic_oauth2_only_for_the_instance() {
    use base64::Engine as _;
    const TOKEN: &str = "glpat-tokenThatNeverReachesArgv";
    let env = Env::new();
    // Port 9 on loopback refuses the connection: the fetch fails after git read its config.
    let server = "https://127.0.0.1:9";
    env.git(&["remote", "add", "gitlab", &format!("{server}/acme/defs.git")]);
    env.git(&["remote", "add", "elsewhere", "https://127.0.0.2:9/acme/defs.git"]);
    let spy = crate::credentials::GitSpy::new();
    let path = spy.path();
    let header_for = |remote: &str, token: (&str, &str)| {
        let _ = std::fs::remove_file(spy.log());
        let run = env.defsync_in(
            &env.work,
            &["push", "--json", "--remote", remote],
            &[("PATH", path.as_str()), ("GITLAB_CI", "true"), ("CI_SERVER_URL", server), token],
        );
        assert_ne!(run.code, 0, "{remote}: nothing listens there: {run:?}");
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(all.contains("cannot fetch") && !all.contains(TOKEN), "{remote}: {all}");
        let calls = spy.calls();
        let fetch = calls.iter().find(|c| c.args.first().is_some_and(|a| a == "fetch")).expect("a fetch");
        assert!(!fetch.args.iter().any(|a| a.contains(TOKEN)), "{:?}", fetch.args);
        for (name, value) in &fetch.env {
            assert!(!["GITLAB_TOKEN", "CI_JOB_TOKEN"].contains(&name.as_str()), "git inherited {name}");
            assert!(!value.contains(TOKEN), "git sees the token in {name}");
        }
        fetch.config().into_iter().filter(|(k, _)| k.contains("extraheader")).map(|(_, v)| v).collect::<Vec<_>>()
    };
    let basic = |user: &str| {
        format!("AUTHORIZATION: basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{TOKEN}")))
    };
    assert_eq!(header_for("gitlab", ("GITLAB_TOKEN", TOKEN)), ["".to_owned(), basic("oauth2")]);
    assert_eq!(header_for("gitlab", ("CI_JOB_TOKEN", TOKEN)), ["".to_owned(), basic("gitlab-ci-token")]);
    assert!(header_for("elsewhere", ("GITLAB_TOKEN", TOKEN)).is_empty(), "another host got the token");
}

/// In a merge request pipeline, the check's summary is one MR note that every run edits, with
/// no secret in it; with only the job token, the run says why there is no note and still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_request_pipeline_keeps_one_summary_note_up_to_date() {
    let (s, env) = setup().await;
    s.state.lock().unwrap().mrs.push(super::standin::Mr {
        id: 77,
        iid: 7,
        source_branch: "feature".into(),
        target_branch: "main".into(),
        title: "Edit definitions".into(),
        description: String::new(),
        state: "opened".into(),
        labels: vec![],
    });
    // The branch holds the definitions, as a merge request's target would.
    assert_eq!(tokio::task::block_in_place(|| pull(&s, &env, &[])).code, 0);
    let reports = env.dir.path().join("reports");
    let check = |token_var: &str, token: &str| {
        env.defsync_in(
            &env.work,
            &["push", "--dry-run"],
            &[
                ("GITLAB_CI", "true"),
                (token_var, token),
                ("CI_API_V4_URL", s.url.as_str()),
                ("CI_PROJECT_ID", PROJECT_PATH),
                ("CI_MERGE_REQUEST_IID", "7"),
                ("DEFSYNC_REPORT_DIR", reports.to_str().unwrap()),
            ],
        )
    };
    for round in 0..2 {
        let r = tokio::task::block_in_place(|| check("GITLAB_TOKEN", "glpat-maintainer"));
        assert_eq!(r.code, 0, "round {round}: {r:#?}");
        assert!(r.stderr.contains("the summary is note"), "{}", r.stderr);
        let st = s.state.lock().unwrap();
        let notes: Vec<_> = st.notes.iter().filter(|n| n.iid == 7).collect();
        assert_eq!(notes.len(), 1, "round {round}: one note, edited in place");
        assert!(notes[0].body.starts_with(defsync::forge::gitlab::SUMMARY_MARKER), "{}", notes[0].body);
        assert!(!notes[0].body.contains("glpat-maintainer"));
        let file = std::fs::read_to_string(reports.join("defsync-summary.md")).unwrap();
        assert!(
            notes[0].body.trim_end().ends_with(file.trim_end()),
            "the note is the summary file:\n{}\n---file:\n{file}",
            notes[0].body
        );
    }
    let r = tokio::task::block_in_place(|| check("CI_JOB_TOKEN", "job-token-value"));
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("the job token cannot write notes"), "{}", r.stderr);
    assert_eq!(s.state.lock().unwrap().notes.len(), 1);
    s.assert_conforms();
}
