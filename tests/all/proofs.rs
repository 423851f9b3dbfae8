//! Contract v1.2 blob proofs: a run skips parsing exactly the files whose content the base
//! proves (the same blob at the key's default path), parses every other file, and reaches the
//! same result on a platform that keeps no blobs.

use serde_json::json;

use crate::support::{Env, Run};

const FLOW: &str = "defs/workflow/notify-on-deal.yaml";
const CONN: &str = "defs/connection/salesforce.yaml";

fn parsed(r: &Run) -> u64 {
    r.json()["stats"]["files_parsed"].as_u64().expect("stats.files_parsed")
}

/// Two definitions, pulled: the pull's `PUT /sync` recorded both files' blobs.
fn pulled() -> Env {
    let env = Env::new();
    env.dashboard_put("workflow", "notify-on-deal", json!({"channel": "#sales", "retries": 3}));
    env.dashboard_put("connection", "salesforce", json!({"api_version": "61.0"}));
    env.run("pull", &[]).ok();
    env
}

/// Forgets every blob the store holds, as a platform that implements only v1.1 would have none.
fn drop_blobs(env: &Env) {
    let store = rusqlite::Connection::open(&env.platform).unwrap();
    store.execute("UPDATE base SET blob = NULL", []).unwrap();
}

#[test]
fn no_op_runs_parse_no_proven_file() {
    let env = pulled();
    for command in ["status", "push", "pull"] {
        let r = env.run(command, &[]).ok();
        assert_eq!(r.status(), "in_sync", "{command}");
        assert_eq!(parsed(&r), 0, "{command} parsed files the base proves");
    }
}

/// The file at the same path, changed in Git to bytes it held earlier: its blob is not the one
/// the base holds now, so it is parsed and its change sent.
#[test]
fn a_file_back_at_an_older_blob_is_parsed_and_sent() {
    let env = pulled();
    let v1 = env.read(FLOW);
    env.write(FLOW, &v1.replace("retries: 3", "retries: 5"));
    env.commit_and_push("more retries");
    let r = env.run("push", &[]).ok();
    assert_eq!(r.changes(), ["platform update workflow/notify-on-deal"]);
    assert_eq!(parsed(&r), 1 + 1, "the changed file, then read again to send it");
    assert_eq!(parsed(&env.run("push", &[]).ok()), 0, "the push's commit recorded the new blob");

    env.write(FLOW, &v1);
    env.commit_and_push("back to 3 retries");
    let r = env.run("push", &[]).ok();
    assert_eq!(r.changes(), ["platform update workflow/notify-on-deal"]);
    let status = env.run("status", &[]).ok();
    assert_eq!(status.status(), "in_sync");
    assert_eq!(parsed(&status), 0);
}

/// A renamed file keeps its blob but is no longer at its key's default path: it is parsed on
/// every run, and nothing changes.
#[test]
fn a_renamed_file_is_parsed_and_changes_nothing() {
    let env = pulled();
    env.git(&["mv", FLOW, "defs/workflow/renamed.yaml"]);
    env.commit_and_push("rename");
    for command in ["push", "push", "pull", "status"] {
        let r = env.run(command, &[]).ok();
        assert_eq!(r.status(), "in_sync", "{command}");
        assert_eq!(parsed(&r), 1, "{command}: the renamed file, and only it, is parsed");
    }
}

/// A blob the base proves, found at a path that is not its key's default path, proves nothing
/// there: swapped files are both parsed, and a copy is the duplicate it is.
#[test]
fn a_proven_blob_at_another_path_is_parsed() {
    let env = pulled();
    let (flow, conn) = (env.read(FLOW), env.read(CONN));
    env.write(FLOW, &conn);
    env.write(CONN, &flow);
    env.commit_and_push("swap the files");
    let r = env.run("push", &[]).ok();
    assert_eq!(r.status(), "in_sync");
    assert_eq!(parsed(&r), 2);

    env.write(FLOW, &flow);
    env.write(CONN, &conn);
    env.write("defs/workflow/copy.yaml", &flow);
    env.commit_and_push("a copy");
    let r = env.run("push", &[]);
    assert_eq!(r.status(), "invalid", "{r:#?}");
    let paths: Vec<String> =
        r.json()["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().to_owned()).collect();
    assert_eq!(paths, ["defs/workflow/copy.yaml", FLOW]);
}

/// A proven file that `.defsyncignore` now excludes is not a definition: no proof brings it back.
#[test]
fn an_ignored_file_is_not_proven_back() {
    let env = pulled();
    env.write("defs/.defsyncignore", "workflow/\n");
    env.commit_and_push("ignore the workflows");
    let r = env.run("status", &[]).ok();
    assert_eq!(r.changes(), ["platform delete workflow/notify-on-deal"]);
    assert_eq!(parsed(&r), 0);
}

/// The same story on a platform that keeps blobs and on one that drops them: the same changes,
/// statuses and files; only the number of files parsed differs.
#[test]
fn a_platform_without_blobs_syncs_the_same() {
    let story = |forget: bool| {
        let env = pulled();
        let mut seen = Vec::new();
        let mut parses = 0;
        let mut step = |r: Run| {
            if forget {
                drop_blobs(&env);
            }
            parses += parsed(&r);
            seen.push((r.status(), r.changes()));
        };
        if forget {
            drop_blobs(&env);
        }
        step(env.run("push", &[]).ok());
        env.write(FLOW, &env.read(FLOW).replace("retries: 3", "retries: 4"));
        env.commit_and_push("edit");
        step(env.run("push", &[]).ok());
        env.dashboard_put("connection", "salesforce", json!({"api_version": "62.0"}));
        step(env.run("pull", &[]).ok());
        env.git(&["mv", FLOW, "defs/workflow/moved.yaml"]);
        env.commit_and_push("move");
        step(env.run("push", &[]).ok());
        step(env.run("pull", &[]).ok());
        step(env.run("status", &[]).ok());
        (seen, env.files(), parses)
    };
    let (with_blobs, files, parsed_with) = story(false);
    let (without, files_without, parsed_without) = story(true);
    assert_eq!(with_blobs, without);
    assert_eq!(files, files_without);
    assert!(parsed_with < parsed_without, "blobs spared no parsing: {parsed_with} vs {parsed_without}");
}
