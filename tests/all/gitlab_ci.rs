//! The GitLab CI/CD runtime: the event read from a job's variables, the report files written the
//! way GitLab parses them (`dotenv`, Code Quality, JSON, Markdown), the section markers, and the
//! real binary in a GitLab-like job against a real `defsync serve`, with no secret in any file.
//! The component templates themselves run under gitlab-ci-local in `.ci/gitlab.sh`.

use std::collections::HashMap;
use std::path::Path;

use defsync::ci::gitlab::{self, Runtime};
use defsync::ci::{Event, Runtime as _};
use defsync::report::{Conflict, FileError, Report, ReportError, Resolution, Status};
use serde_json::Value;

use crate::server::ServerProcess;
use crate::support::Env;

const SECRET: &str = "glpat-Zx9\"secret\\key";
const API_KEY: &str = "dsk_gitlab_test_key_7f3a";

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| map.get(name).cloned()
}

fn runtime(pairs: &[(&str, &str)]) -> Runtime {
    Runtime::from_vars(vars(pairs)).expect("GITLAB_CI=true makes a GitLab runtime")
}

#[test]
fn gitlab_ci_is_detected_only_when_gitlab_ci_is_true() {
    assert!(Runtime::from_vars(vars(&[])).is_none());
    assert!(Runtime::from_vars(vars(&[("GITLAB_CI", "false")])).is_none());
    assert!(Runtime::from_vars(vars(&[("GITLAB_CI", "true")])).is_some());
    let detected = defsync::ci::detect_from(vars(&[("GITLAB_CI", "true"), ("CI_COMMIT_BRANCH", "main")]));
    assert_eq!(detected.event().branch.as_deref(), Some("main"));
    let local = defsync::ci::detect_from(vars(&[("CI_COMMIT_BRANCH", "main")]));
    assert_eq!(local.event().branch, None, "outside GitLab, its variables mean nothing");
}

#[test]
fn a_triggered_pipeline_names_the_project_and_commit_from_its_variables() {
    let rt = runtime(&[
        ("GITLAB_CI", "true"),
        ("CI_PIPELINE_SOURCE", "trigger"),
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_REF_NAME", "main"),
        ("CI_DEFAULT_BRANCH", "main"),
        ("CI_PROJECT_PATH", "Acme/Sub/Integrations"),
        ("CI_SERVER_HOST", "gitlab.example.com"),
        ("CI_JOB_URL", "https://gitlab.example.com/acme/sub/integrations/-/jobs/42"),
        ("CI_PIPELINE_URL", "https://gitlab.example.com/acme/sub/integrations/-/pipelines/7"),
        (gitlab::PROJECT_VAR, " p1 "),
        (gitlab::COMMIT_VAR, "c_01JD"),
    ]);
    let e = rt.event();
    assert_eq!(
        e,
        Event {
            project: Some("p1".into()),
            commit: Some("c_01JD".into()),
            branch: Some("main".into()),
            checked_ref: Some("refs/heads/main".into()),
            repository: Some("Acme/Sub/Integrations".into()),
            run_url: Some("https://gitlab.example.com/acme/sub/integrations/-/jobs/42".into()),
            identity: Some(defsync::git::Identity {
                name: "defsync (GitLab CI)".into(),
                email: "noreply@gitlab.example.com".into()
            }),
        }
    );
}

#[test]
fn a_merge_request_pipeline_names_the_source_branch_and_syncs_no_branch() {
    let e = runtime(&[
        ("GITLAB_CI", "true"),
        ("CI_PIPELINE_SOURCE", "merge_request_event"),
        ("CI_COMMIT_REF_NAME", "feature/retries"),
        ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "feature/retries"),
        ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
        ("CI_PIPELINE_URL", "https://gitlab.example.com/a/b/-/pipelines/7"),
        (gitlab::PROJECT_VAR, ""),
    ])
    .event();
    // CI_COMMIT_BRANCH is not set in merge request pipelines: the run is a dry run on a detached
    // checkout, and reports name the merge request's branch.
    assert_eq!(e.branch, None);
    assert_eq!(e.checked_ref.as_deref(), Some("refs/heads/feature/retries"));
    assert_eq!(e.project, None, "an empty variable is no project");
    assert_eq!(e.run_url.as_deref(), Some("https://gitlab.example.com/a/b/-/pipelines/7"));
    let tag = runtime(&[("GITLAB_CI", "true"), ("CI_COMMIT_TAG", "v1"), ("CI_COMMIT_REF_NAME", "v1")]).event();
    assert_eq!(tag.checked_ref.as_deref(), Some("refs/tags/v1"));
    let odd =
        runtime(&[("GITLAB_CI", "true"), ("CI_JOB_URL", "https://x/)[a](javascript:b"), ("CI_PROJECT_PATH", "a/b)")]);
    assert_eq!(odd.event().run_url, None);
    assert_eq!(odd.event().repository, None);
}

#[test]
fn sections_are_gitlab_markers_and_titles_cannot_forge_one() {
    let rt = runtime(&[("GITLAB_CI", "true")]).with_clock(1_700_000_000);
    let mut log = Vec::new();
    rt.group_start(&mut log, "defsync pull").unwrap();
    rt.group_start(&mut log, "inner\u{1b}[0Ksection_end:1:x\r").unwrap();
    rt.group_end(&mut log).unwrap();
    rt.group_end(&mut log).unwrap();
    rt.group_end(&mut log).unwrap(); // one too many: nothing
    let log = String::from_utf8(log).unwrap();
    assert_eq!(
        log,
        "\u{1b}[0Ksection_start:1700000000:defsync_0_defsync_pull[collapsed=true]\r\u{1b}[0Kdefsync pull\n\
         \u{1b}[0Ksection_start:1700000000:defsync_1_inner__0Ksection_end_1_x_[collapsed=true]\r\u{1b}[0Kinner\\u{1b}[0Ksection_end:1:x\\r\n\
         \u{1b}[0Ksection_end:1700000000:defsync_1_inner__0Ksection_end_1_x_\r\u{1b}[0K\n\
         \u{1b}[0Ksection_end:1700000000:defsync_0_defsync_pull\r\u{1b}[0K\n"
    );
}

/// A report with everything in it: changes, an invalid file, a conflict, an error, and the
/// secret in places a careless writer would copy it from.
fn busy_report() -> Report {
    let mut r = Report::new("push");
    r.status = Status::Conflict;
    r.project = Some("p1".into());
    r.path = Some("defs".into());
    r.errors.push(FileError {
        path: "defs/workflow/bad.yaml".into(),
        line: Some(3),
        column: Some(7),
        message: format!("unexpected token near {SECRET}"),
    });
    r.errors.push(FileError {
        path: "platform:workflow/odd".into(),
        line: None,
        column: None,
        message: "the platform sent an invalid definition: too deep".into(),
    });
    r.conflicts.push(Conflict {
        kind: "workflow".into(),
        name: "notify".into(),
        path: Some("defs/workflow/notify.yaml".into()),
        base: None,
        git: None,
        platform: None,
        resolution: Resolution::None,
        git_yaml: Some(format!("token: {SECRET}\n")),
        platform_yaml: Some("retries: 7\n".into()),
    });
    r.error = Some(ReportError { message: format!("HTTP 401 for key {API_KEY}"), exit_code: 1 });
    r
}

/// Checks a `dotenv` report against GitLab's rules (ci-reports.md): UTF-8, no empty lines or
/// comments, `NAME=value` with an ASCII name, no quotes for escaping, at most 5 KB.
fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    assert!(text.len() <= gitlab::DOTENV_LIMIT, "dotenv is {} bytes", text.len());
    assert!(!text.starts_with('\u{feff}'));
    text.lines()
        .map(|line| {
            assert!(!line.is_empty() && !line.starts_with('#'), "GitLab refuses the line {line:?}");
            let (name, value) = line.split_once('=').unwrap_or_else(|| panic!("no '=' in {line:?}"));
            assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{name:?}");
            assert!(!value.contains([' ', '"', '\'', '\r', '\t']), "{line:?}");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// Checks a Code Quality report against GitLab's format: one JSON array of objects with the
/// required fields and a known severity.
fn check_codequality(text: &str) -> Vec<Value> {
    assert!(!text.starts_with('\u{feff}'), "GitLab's parser refuses a byte order mark");
    let v: Value = serde_json::from_str(text).expect("Code Quality report is JSON");
    let findings = v.as_array().expect("a single JSON array").clone();
    for f in &findings {
        for key in ["description", "check_name", "fingerprint"] {
            assert!(f[key].as_str().is_some_and(|s| !s.is_empty()), "{key} in {f}");
        }
        assert!(["info", "minor", "major", "critical", "blocker"].contains(&f["severity"].as_str().unwrap()), "{f}");
        let path = f["location"]["path"].as_str().unwrap();
        assert!(!path.starts_with('/') && !path.contains(".."), "a relative repository path: {path}");
        assert!(f["location"]["lines"]["begin"].as_u64().is_some_and(|l| l >= 1), "{f}");
    }
    findings
}

#[test]
fn reports_are_written_in_gitlabs_formats_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("out/reports");
    let rt = runtime(&[
        ("GITLAB_CI", "true"),
        (gitlab::REPORT_DIR_VAR, reports.to_str().unwrap()),
        ("CI_JOB_URL", "https://gitlab.example.com/a/b/-/jobs/42"),
        ("CI_JOB_TOKEN", "glcbt-64_jobtoken"),
    ]);
    // The CLI masks the key; the runtime knows CI_JOB_TOKEN by itself.
    rt.mask(&mut std::io::sink(), API_KEY).unwrap();
    rt.mask(&mut std::io::sink(), SECRET).unwrap();
    let mut report = busy_report();
    report.conflicts[0].platform_yaml = Some("job: glcbt-64_jobtoken\n".into());
    let mut log = Vec::new();
    rt.finish(&mut log, &report).unwrap();
    assert_eq!(rt.report_dir(), reports);
    let default = runtime(&[("GITLAB_CI", "true"), ("CI_PROJECT_DIR", "/builds/a/b")]);
    assert_eq!(default.report_dir(), Path::new(gitlab::DEFAULT_REPORT_DIR), "relative to the job's working directory");
    let read = |name: &str| std::fs::read_to_string(reports.join(name)).unwrap();

    let env: HashMap<String, String> = parse_dotenv(&read(gitlab::DOTENV_FILE)).into_iter().collect();
    assert_eq!(env.len(), gitlab::DOTENV_NAMES.len());
    assert_eq!(env["DEFSYNC_STATUS"], "conflict");
    assert_eq!(env["DEFSYNC_CHANGED"], "false");
    assert_eq!(env["DEFSYNC_CONFLICTS"], "1");

    let findings = check_codequality(&read(gitlab::CODEQUALITY_FILE));
    assert_eq!(findings.len(), 3, "{findings:#?}");
    assert_eq!(findings[0]["location"]["path"], "defs/workflow/bad.yaml");
    assert_eq!(findings[0]["location"]["lines"]["begin"], 3);
    assert_eq!(findings[0]["check_name"], "defsync-invalid-definition");
    assert_eq!(findings[1]["location"]["path"], "defs", "a platform-side problem goes on the sync root");
    assert_eq!(findings[2]["check_name"], "defsync-conflict");
    assert_eq!(findings[2]["location"]["path"], "defs/workflow/notify.yaml");
    // Stable: the same problems give the same fingerprints in another run.
    let again = gitlab::codequality(&report);
    let fingerprints = |v: &[Value]| v.iter().map(|f| f["fingerprint"].clone()).collect::<Vec<_>>();
    assert_eq!(fingerprints(&findings), fingerprints(&check_codequality(&again)));
    let distinct: std::collections::BTreeSet<String> = findings.iter().map(|f| f["fingerprint"].to_string()).collect();
    assert_eq!(distinct.len(), 3);

    let json: Value = serde_json::from_str(&read(gitlab::REPORT_FILE)).expect("the JSON report parses");
    assert_eq!(json["status"], "conflict");
    assert_eq!(json["conflicts"][0]["platform_yaml"], "job: [MASKED]\n");

    let md = read(gitlab::SUMMARY_FILE);
    assert!(md.contains("`notify`"), "{md}");
    assert!(md.contains("[View this job](https://gitlab.example.com/a/b/-/jobs/42)"), "{md}");
    assert!(md.contains("+job: [MASKED]"), "{md}");

    let log = String::from_utf8(log).unwrap();
    assert!(log.contains(gitlab::SUMMARY_FILE), "{log}");
    for (name, text) in [
        ("dotenv", read(gitlab::DOTENV_FILE)),
        ("codequality", read(gitlab::CODEQUALITY_FILE)),
        ("json", read(gitlab::REPORT_FILE)),
        ("summary", md.clone()),
        ("log", log.clone()),
    ] {
        for secret in [SECRET, API_KEY, "glcbt-64_jobtoken", "Zx9\\\"secret\\\\key"] {
            assert!(!text.contains(secret), "{name} holds the secret {secret:?}:\n{text}");
        }
    }
    // The report directory holds the four files and nothing else (no temporary file left).
    let mut names: Vec<String> =
        std::fs::read_dir(&reports).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut want = [gitlab::CODEQUALITY_FILE, gitlab::DOTENV_FILE, gitlab::REPORT_FILE, gitlab::SUMMARY_FILE];
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn an_in_sync_run_writes_an_empty_code_quality_report() {
    let mut r = Report::new("push");
    r.status = Status::InSync;
    let findings = check_codequality(&gitlab::codequality(&r));
    assert!(findings.is_empty());
    let env = parse_dotenv(&gitlab::dotenv(&r));
    assert_eq!(env[0], ("DEFSYNC_STATUS".to_owned(), "in_sync".to_owned()));
}

#[cfg(unix)]
#[test]
fn a_symlink_in_the_report_directory_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "keep me\n").unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    std::os::unix::fs::symlink(&outside, reports.join(gitlab::SUMMARY_FILE)).unwrap();
    let rt = runtime(&[("GITLAB_CI", "true"), (gitlab::REPORT_DIR_VAR, reports.to_str().unwrap())]);
    rt.finish(&mut Vec::new(), &Report::new("status")).unwrap();
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me\n");
    assert!(!std::fs::symlink_metadata(reports.join(gitlab::SUMMARY_FILE)).unwrap().file_type().is_symlink());

    // A report directory that is itself a link is refused, naming the variable.
    let linked = dir.path().join("linked");
    std::os::unix::fs::symlink(&reports, &linked).unwrap();
    let rt = runtime(&[("GITLAB_CI", "true"), (gitlab::REPORT_DIR_VAR, linked.to_str().unwrap())]);
    let err = rt.finish(&mut Vec::new(), &Report::new("status")).unwrap_err();
    assert!(format!("{err:#}").contains(gitlab::REPORT_DIR_VAR), "{err:#}");
}

/// The job environment of a GitLab runner, for the real binary.
fn job_env(env: &Env, project_dir: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("GITLAB_CI", "true"),
        ("CI", "true"),
        ("CI_PROJECT_DIR", project_dir.to_str().unwrap()),
        ("CI_PROJECT_PATH", "acme/integrations"),
        ("CI_SERVER_HOST", "gitlab.example.com"),
        ("CI_JOB_URL", "https://gitlab.example.com/acme/integrations/-/jobs/9"),
        ("CI_JOB_TOKEN", "glcbt-64_jobtoken_of_the_run"),
        ("CI_DEFAULT_BRANCH", "main"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let _ = env;
    v
}

fn run_job(env: &Env, args: &[&str], vars: &[(String, String)], project_from_event: bool) -> crate::support::Run {
    let mut cmd = env.defsync_command(&env.work, args, &[]);
    if project_from_event {
        cmd.env_remove("DEFSYNC_PROJECT");
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    crate::support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The binary in a triggered pipeline: the project and commit come from the trigger's pipeline
/// variables, the branch from `CI_COMMIT_BRANCH` on a detached checkout, and the four report files
/// appear, secret-free; then a conflict fails the job with the files still written.
#[test]
fn the_binary_in_a_gitlab_job_reads_the_trigger_and_writes_the_reports() {
    let (_store, server) = ServerProcess::scratch(API_KEY);
    let env = Env::on_server(&server.url(), API_KEY);
    env.dashboard_put("workflow", "notify", serde_json::json!({"retries": 3}));
    let head = env.run("status", &[]).json()["platform_commit"]["id"].as_str().unwrap().to_owned();
    // A runner's checkout is fresh: the report files of the runs below are not the repository's.
    std::fs::write(env.work.join(".git/info/exclude"), format!("{}/\n", gitlab::DEFAULT_REPORT_DIR)).unwrap();
    // A runner checks out the commit, detached.
    let sha = env.head();
    env.git(&["checkout", "--quiet", "--detach", &sha]);
    let vars = job_env(
        &env,
        &env.work,
        &[
            ("CI_PIPELINE_SOURCE", "trigger"),
            ("CI_COMMIT_BRANCH", "main"),
            (gitlab::PROJECT_VAR, crate::support::PROJECT),
            (gitlab::COMMIT_VAR, &head),
        ],
    );
    let r = run_job(&env, &["pull"], &vars, true);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("\u{1b}[0Ksection_start:"), "{}", r.stderr);
    assert!(r.stderr.contains("\u{1b}[0Ksection_end:"), "{}", r.stderr);
    let reports = env.work.join(gitlab::DEFAULT_REPORT_DIR);
    let read = |name: &str| std::fs::read_to_string(reports.join(name)).unwrap();
    let dotenv: HashMap<String, String> = parse_dotenv(&read(gitlab::DOTENV_FILE)).into_iter().collect();
    assert_eq!(dotenv["DEFSYNC_STATUS"], "changed");
    assert_eq!(dotenv["DEFSYNC_ADDED"], "1");
    assert_eq!(dotenv["DEFSYNC_GIT_COMMIT"], env.origin_head());
    assert_eq!(dotenv["DEFSYNC_PLATFORM_COMMIT"], head);
    let json: Value = serde_json::from_str(&read(gitlab::REPORT_FILE)).unwrap();
    assert_eq!(json["project"], crate::support::PROJECT);
    assert_eq!(json["requested_commit"], head.as_str());
    assert_eq!(json["repository"], "acme/integrations");
    let pulled = env.git(&["log", "-1", "--format=%cn <%ce>", "origin/main"]);
    assert_eq!(pulled.trim(), "defsync (GitLab CI) <noreply@gitlab.example.com>");
    assert!(check_codequality(&read(gitlab::CODEQUALITY_FILE)).is_empty());
    assert!(read(gitlab::SUMMARY_FILE).contains("`notify`"));

    // Both sides edit `notify`: the push job fails, and the reports say why.
    env.dashboard_put("workflow", "notify", serde_json::json!({"retries": 7}));
    env.git(&["checkout", "--quiet", "main"]);
    env.git(&["pull", "--quiet", "--ff-only", "origin", "main"]);
    env.write("defs/workflow/notify.yaml", "kind: workflow\nname: notify\nspec:\n  retries: 9\n");
    env.commit_and_push("Nine retries");
    let sha = env.head();
    env.git(&["checkout", "--quiet", "--detach", &sha]);
    let vars = job_env(&env, &env.work, &[("CI_PIPELINE_SOURCE", "push"), ("CI_COMMIT_BRANCH", "main")]);
    let r = run_job(&env, &["push"], &vars, false);
    assert_eq!(r.code, 3, "{r:#?}");
    let dotenv: HashMap<String, String> = parse_dotenv(&read(gitlab::DOTENV_FILE)).into_iter().collect();
    assert_eq!(dotenv["DEFSYNC_STATUS"], "conflict");
    let findings = check_codequality(&read(gitlab::CODEQUALITY_FILE));
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0]["location"]["path"], "defs/workflow/notify.yaml");
    let md = read(gitlab::SUMMARY_FILE);
    assert!(md.contains("retries: 7") && md.contains("retries: 9"), "{md}");
    for name in [gitlab::DOTENV_FILE, gitlab::REPORT_FILE, gitlab::CODEQUALITY_FILE, gitlab::SUMMARY_FILE] {
        let text = read(name);
        for secret in [API_KEY, "glcbt-64_jobtoken_of_the_run"] {
            assert!(!text.contains(secret), "{name} holds {secret}");
        }
    }
    assert!(!r.stderr.contains(API_KEY) && !r.stdout.contains(API_KEY));
}
