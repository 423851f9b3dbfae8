//! `defsync serve keys create|list|revoke`: the API keys kept in the store, each with a scope, an
//! optional project list and an optional expiry. The secret is printed once, alone on stdout, so
//! `KEY=$(defsync serve keys create ...)` captures it; everything else goes to stderr.

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};

use super::serve::StoreArgs;
use crate::api::ApiError;
use crate::store::{KeyScope, NewKey, StoredKey};

#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a key. Its secret is printed once on stdout (and never again); its details on
    /// stderr.
    Create(CreateArgs),
    /// List the keys, revoked ones included; never their secrets.
    List(ListArgs),
    /// Revoke a key: every `serve` on the store refuses it from the next request on.
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// Reads only: every GET, and batch-get. Enough for `status` and a pull request's dry run.
    Read,
    /// Reads and writes: commits, the sync record, projects. Needed by `push` and `pull`.
    Write,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The key's name, shown in the access log and in `list`: letters, digits, spaces, '.', '_',
    /// '-'. Unique, revoked keys included.
    #[arg(long)]
    pub name: String,
    /// What the key may do.
    #[arg(long, value_enum)]
    pub scope: ScopeArg,
    /// A project the key may use; repeat for several. Without it, every project.
    #[arg(long = "project", value_name = "ID")]
    pub projects: Vec<String>,
    /// The key expires this long after now: a number and a unit, s, m, h, d or w (`30d`).
    #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
    pub expires_in: Option<String>,
    /// The key expires at this time, in RFC 3339 (`2027-06-30T00:00:00Z`).
    #[arg(long, value_name = "RFC3339")]
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The name of the key to revoke.
    pub name: String,
}

/// The store's refusals as the CLI's: what the user gave is wrong (exit 2), or the store failed.
fn store_error(e: ApiError) -> anyhow::Error {
    match e.status {
        404 | 409 | 422 => crate::error::Error::Config(e.message).into(),
        _ => anyhow::anyhow!("the store failed: {}", e.message),
    }
}

fn config(message: String) -> anyhow::Error {
    crate::error::Error::Config(message).into()
}

pub fn run(args: &KeysArgs) -> anyhow::Result<()> {
    match &args.command {
        KeysCommand::Create(a) => create(a),
        KeysCommand::List(a) => list(a),
        KeysCommand::Revoke(a) => revoke(a),
    }
}

fn create(a: &CreateArgs) -> anyhow::Result<()> {
    let now = unix_now();
    let expires_unix = match (&a.expires_in, &a.expires_at) {
        (Some(d), _) => Some(now.saturating_add(parse_duration(d).map_err(|e| config(format!("--expires-in: {e}")))?)),
        (None, Some(t)) => {
            let at = parse_rfc3339(t).map_err(|e| config(format!("--expires-at: {e}")))?;
            if at <= now {
                return Err(config(format!("--expires-at {t:?} is in the past: give a later time")));
            }
            Some(at)
        }
        (None, None) => None,
    };
    let new = NewKey {
        name: a.name.clone(),
        scope: match a.scope {
            ScopeArg::Read => KeyScope::Read,
            ScopeArg::Write => KeyScope::Write,
        },
        projects: (!a.projects.is_empty()).then(|| a.projects.clone()),
        expires_unix,
    };
    let store = a.store.open()?;
    let (key, secret) = store.create_key(&new).map_err(store_error)?;
    // The secret alone on stdout, so a shell captures exactly it.
    println!("{secret}");
    eprintln!(
        "created key {:?} in {}: {}. The secret (on stdout) is shown only this once: store it now as a \
         secret (clients send it as DEFSYNC_API_KEY).",
        key.name,
        a.store.store,
        describe(&key)
    );
    Ok(())
}

fn list(a: &ListArgs) -> anyhow::Result<()> {
    let store = a.store.open()?;
    let keys = store.keys().map_err(store_error)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(());
    }
    if keys.is_empty() {
        eprintln!("no keys in {}: create one with `defsync serve keys create`", a.store.store);
        return Ok(());
    }
    let now = unix_now();
    for k in &keys {
        let state = match k.authorize(None, crate::store::Access::Read, now) {
            Ok(()) => "active",
            Err(_) if k.revoked_at.is_some() => "revoked",
            Err(_) => "expired",
        };
        println!("{:<24} {:<8} {}  {}", k.name, state, k.hint, describe(k));
    }
    Ok(())
}

fn revoke(a: &RevokeArgs) -> anyhow::Result<()> {
    let store = a.store.open()?;
    let key = store.revoke_key(&a.name).map_err(store_error)?;
    eprintln!(
        "revoked key {:?} (at {}): every `defsync serve` on {} refuses it from the next request on",
        key.name,
        key.revoked_at.as_deref().unwrap_or("?"),
        a.store.store
    );
    Ok(())
}

/// `scope write, every project, never expires, created ...`.
fn describe(k: &StoredKey) -> String {
    let projects = match &k.projects {
        None => "every project".to_owned(),
        Some(p) => format!("project{} {}", if p.len() == 1 { "" } else { "s" }, p.join(", ")),
    };
    let expires = k.expires_at.as_deref().map_or("never expires".to_owned(), |t| format!("expires {t}"));
    let revoked = k.revoked_at.as_deref().map(|t| format!(", revoked {t}")).unwrap_or_default();
    format!("scope {}, {projects}, {expires}, created {}{revoked}", k.scope, k.created_at)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `30d`, `12h`, `90m`, `3600s`, `2w`, in seconds.
fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: i64 = number.parse().map_err(|_| anyhow::anyhow!("{s:?} is not a duration: write it as 30d, 12h or 90m"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("{s:?} has no known unit: end it with s, m, h, d or w (30d)"),
    };
    if n == 0 {
        bail!("{s:?} is no time at all: give a positive duration");
    }
    n.checked_mul(unit_secs).ok_or_else(|| anyhow::anyhow!("{s:?} is too long"))
}

/// An RFC 3339 date-time (`2027-06-30T00:00:00Z`, `2027-06-30T02:00:00.5+02:00`) in Unix
/// seconds; fractions of a second are dropped.
fn parse_rfc3339(s: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("{s:?} is not an RFC 3339 time: write it as 2027-06-30T00:00:00Z");
    let b = s.trim().as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> anyhow::Result<i64> {
        let part = std::str::from_utf8(&b[r]).map_err(|_| bad())?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month[(mo - 1) as usize] || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &rest[1 + digits..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> anyhow::Result<i64> {
                if a.is_ascii_digit() && b.is_ascii_digit() {
                    Ok(i64::from((a - b'0') * 10 + (b - b'0')))
                } else {
                    Err(bad())
                }
            };
            let (oh, om) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return Err(bad()),
    };
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se.min(59) - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_unit() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3600);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86_400);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        for bad in ["", "30", "d", "3x", "-1d", "0d", "1.5d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_times_parse_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_rfc3339("1970-01-01T00:16:40Z").unwrap(), 1_000);
        assert_eq!(parse_rfc3339("2027-06-30T00:00:00Z").unwrap(), 1_814_313_600);
        assert_eq!(parse_rfc3339("2024-02-29T12:30:15.25+02:00").unwrap(), 1_709_202_615);
        assert_eq!(parse_rfc3339("1969-12-31t23:00:00-05:30").unwrap(), 16_200);
        for bad in [
            "2027-06-30",
            "2027-06-30T00:00:00",
            "2027-02-29T00:00:00Z",
            "2027-13-01T00:00:00Z",
            "2027-06-30T24:00:00Z",
            "2027-06-30T00:00:00+2:00",
            "2027-06-30T00:00:00.Z",
            "２027-06-30T00:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }
}
