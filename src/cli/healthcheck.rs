//! `defsync serve healthcheck`: asks a running `serve` for `GET /healthz`, for a container's
//! `HEALTHCHECK` (the image has no curl). It sends no key: the health check needs none.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::output::data;

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The server's base URL [default: http://<--listen>, with 127.0.0.1 for 0.0.0.0].
    #[arg(long, env = "DEFSYNC_HEALTHCHECK_URL")]
    pub url: Option<String>,
    /// The address `serve` listens on, when no --url is given.
    #[arg(long, env = "DEFSYNC_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub timeout: u64,
}

impl HealthcheckArgs {
    /// The URL of `/healthz`. A server listening on every interface is asked on loopback.
    fn health_url(&self) -> String {
        if let Some(url) = &self.url {
            return format!("{}/healthz", url.trim_end_matches('/'));
        }
        let mut addr = self.listen;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            _ => {}
        }
        format!("http://{addr}/healthz")
    }
}

pub async fn run(args: &HealthcheckArgs) -> anyhow::Result<()> {
    let url = args.health_url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout.max(1)))
        // A health check answers itself; a redirect means the URL is wrong.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot set up the HTTP client")?;
    let answer = client.get(&url).send().await.with_context(|| {
        format!("{} does not answer: is `defsync serve` running there? (--url or --listen)", data(&url))
    })?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect());
    if status.as_u16() != 200 {
        bail!("{} answered {status}: unhealthy: {}", data(&url), data(&reason));
    }
    eprintln!("{}: healthy", data(&url));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_is_asked_on_loopback() {
        let args = |listen: &str, url: Option<&str>| HealthcheckArgs {
            url: url.map(str::to_owned),
            listen: listen.parse().unwrap(),
            timeout: 5,
        };
        assert_eq!(args("0.0.0.0:8787", None).health_url(), "http://127.0.0.1:8787/healthz");
        assert_eq!(args("[::]:9000", None).health_url(), "http://[::1]:9000/healthz");
        assert_eq!(args("10.1.2.3:80", None).health_url(), "http://10.1.2.3:80/healthz");
        assert_eq!(args("0.0.0.0:1", Some("http://h:1/")).health_url(), "http://h:1/healthz");
    }
}
