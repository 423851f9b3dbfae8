//! `defsync serve webhook-setup --print`: what to enter on GitHub and GitLab so that `serve`
//! learns what became of the runs it dispatches: the webhook URLs, the events to select, and a
//! newly generated secret for each, shown once and kept nowhere by defsync.

use anyhow::bail;
use clap::Args;
use rand::Rng as _;

#[derive(Debug, Clone, Args)]
pub struct WebhookSetupArgs {
    /// Print the set-up (nothing is changed anywhere). Required: the secrets are shown once.
    #[arg(long)]
    pub print: bool,
    /// The address GitHub and GitLab reach `serve` at, such as https://defsync.example.com.
    #[arg(long, env = "DEFSYNC_PUBLIC_URL", value_name = "URL", default_value = "https://<your serve host>")]
    pub url: String,
}

/// 32 random bytes as hex, with a prefix that says what it is.
fn secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The text `--print` shows, for the two secrets given.
pub fn render(url: &str, github_secret: &str, gitlab_token: &str) -> String {
    let url = url.trim_end_matches('/');
    let gitlab_hash = crate::server::token_sha256(gitlab_token);
    format!(
        "GitHub (Settings > Webhooks > Add webhook, in the repository serve dispatches to):
  Payload URL:   {url}/v1/webhooks/github
  Content type:  application/json
  Secret:        {github_secret}
  Events:        Let me select individual events: Workflow runs, Pushes
  Then give serve the same secret, in its environment only (HMAC needs the secret itself, so it
  cannot be kept hashed):
    DEFSYNC_GITHUB_WEBHOOK_SECRET={github_secret}

GitLab (Settings > Webhooks > Add new webhook, in the project serve triggers):
  URL:           {url}/v1/webhooks/gitlab
  Secret token:  {gitlab_token}
  Trigger:       Pipeline events, Push events
  serve keeps only the token's SHA-256 (it compares, never signs):
    DEFSYNC_GITLAB_WEBHOOK_TOKEN_SHA256={gitlab_hash}
  Optionally, DEFSYNC_GITLAB_READ_TOKEN (read_api) lets serve read each pipeline back rather
  than trust the event's status.

These secrets are shown once: copy them now. Run this again for new ones.
"
    )
}

pub fn run(args: &WebhookSetupArgs) -> anyhow::Result<()> {
    if !args.print {
        bail!("webhook-setup only prints the set-up to enter on GitHub and GitLab: run it with --print");
    }
    print!("{}", render(&args.url, &secret("whsec_"), &secret("glwt_")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_names_urls_events_and_the_hash_of_the_gitlab_token() {
        let text = render("https://defsync.example.com/", "whsec_abc", "glwt_xyz");
        assert!(text.contains("https://defsync.example.com/v1/webhooks/github"), "{text}");
        assert!(text.contains("https://defsync.example.com/v1/webhooks/gitlab"));
        assert!(text.contains("Workflow runs, Pushes") && text.contains("Pipeline events, Push events"));
        assert!(text.contains("DEFSYNC_GITHUB_WEBHOOK_SECRET=whsec_abc"));
        let hash = crate::server::token_sha256("glwt_xyz");
        assert!(text.contains(&format!("DEFSYNC_GITLAB_WEBHOOK_TOKEN_SHA256={hash}")));
        let (a, b) = (secret("whsec_"), secret("whsec_"));
        assert!(a != b && a.len() == 6 + 64, "fresh random secrets");
    }
}
