//! Time and identifiers for the store: RFC 3339 timestamps, time-ordered commit IDs, and random
//! entity-tag salts. Written by hand so the store needs no date crate.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng as _;

/// Seconds since the Unix epoch (0 if the clock is before it, which only a broken clock gives).
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `2026-11-23T10:00:00Z` for the current time.
pub fn now_rfc3339() -> String {
    rfc3339(unix_now())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time in seconds.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm,
/// exact for every date a clock can give).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// `c_` and 26 Crockford base-32 characters, as a ULID: 48 bits of milliseconds, then 80 random
/// bits. IDs sort by creation time, which makes them pleasant in logs; `seq` is the real order.
pub fn new_commit_id() -> String {
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    let mut value: u128 = u128::from(unix_now_millis() & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    let mut out = String::with_capacity(28);
    out.push_str("c_");
    // 26 characters carry 130 bits; the top two are always zero.
    for i in (0..26).rev() {
        out.push(CROCKFORD[((value >> (5 * i)) & 31) as usize] as char);
    }
    out
}

/// 16 random hex digits: the part of an entity tag that differs between stores and records.
pub fn new_salt() -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_428_000), "2026-11-23T10:00:00Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn commit_ids_have_the_documented_form() {
        let a = new_commit_id();
        assert_eq!(a.len(), 28);
        assert!(a.starts_with("c_"));
        assert!(a[2..].bytes().all(|b| CROCKFORD.contains(&b)));
        assert_ne!(a, new_commit_id());
    }
}
