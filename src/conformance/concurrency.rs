//! Concurrency: parallel commits on one parent, of which exactly one wins.

use reqwest::Method;
use serde_json::{Value, json};

use super::context::{Auth, Cx, digest, put};
use super::{Outcome, Verdict, check};

/// Rounds of the race: one round can pass by luck of timing.
const ROUNDS: usize = 3;

pub async fn one_winner(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let mut names = vec!["w".to_owned()];
    let mut parent = Cx::id(&cx.commit(&p, None, json!([put("workflow", "w", json!(0))])).await?)?;
    for round in 1..=ROUNDS {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..cx.parallel() {
            let (cx, p, parent) = (cx.clone(), p.clone(), parent.clone());
            tasks.spawn(async move {
                let body = json!({"parent": parent, "message": format!("racer {i}"), "origin": {"type": "api"},
                    "changes": [put("workflow", "w", json!(format!("{round}-{i}"))), put("workflow", &format!("r{i}"), json!(round))]});
                cx.send(Method::POST, &format!("/v1/projects/{p}/commits"), Auth::Key, &[], Some(body.to_string().into_bytes()))
                    .await
            });
        }
        let mut answers = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            answers.push(joined.map_err(|e| Verdict::Fail(format!("a racing request's task failed: {e}")))??);
        }
        let winners: Vec<&Value> = answers.iter().filter(|a| a.status == 201).map(|a| &a.json).collect();
        check!(
            winners.len() == 1,
            "round {round}: {} parallel commits on one parent: exactly one must win, but {} got 201",
            cx.parallel(),
            winners.len()
        );
        let winner = Cx::id(winners[0])?;
        for a in answers.iter().filter(|a| a.status != 201) {
            a.expect_error(409, "head_moved", "a commit that lost the race")?;
            check!(
                a.json.pointer("/error/head/id").and_then(Value::as_str) == Some(winner.as_str()),
                "round {round}: a loser's 409 head_moved must carry the winner {winner} as head: {}",
                a.summary()
            );
        }
        let (state, _) = cx.project_state(&p).await?;
        check!(
            state.pointer("/head/id").and_then(Value::as_str) == Some(winner.as_str())
                && state.pointer("/head/seq").and_then(Value::as_u64) == Some(round as u64 + 1),
            "round {round}: the head must be the winner {winner} with seq {}: {state}",
            round + 1
        );
        let message = winners[0].get("message").and_then(Value::as_str).unwrap_or_default();
        let i = message.strip_prefix("racer ").unwrap_or_default();
        names.push(format!("r{i}"));
        names.sort();
        names.dedup();
        let m = cx.manifest(&p, &winner).await?;
        let got: Vec<&str> = m.iter().map(|e| e.1.as_str()).collect();
        let w = m.iter().find(|e| e.1 == "w").map(|e| e.2.as_str());
        check!(
            got == names && w == Some(digest("workflow", "w", &json!(format!("{round}-{i}"))).as_str()),
            "round {round}: the head's manifest must hold the winner's changes only ({names:?}, w = \"{round}-{i}\"): \
             {m:?}"
        );
        parent = winner;
    }
    Ok(())
}
