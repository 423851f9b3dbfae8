//! The deletion guard: a run that would delete more than a limit of one side's definitions stops
//! before it writes anything, because a moved sync root or a platform that answers an empty
//! project looks, to the three-way rules, exactly like a wish to delete everything.

use std::fmt;
use std::str::FromStr;

use crate::engine::plan::{Action, Mode, Plan};
use crate::report::{DeletionGuard, Side};

/// A share limit applies only to a side with at least this many definitions: deleting 3 of 4 is
/// an ordinary edit, deleting 40 of 50 rarely is.
pub const MIN_DEFINITIONS: usize = 10;

/// How many of one side's definitions a run may delete (`--max-deletions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionLimit {
    /// At most this share, in percent, of the side's definitions; applied only when the side
    /// holds at least [`MIN_DEFINITIONS`].
    Percent(u8),
    /// At most this many, whatever the side's size.
    Count(u64),
}

impl Default for DeletionLimit {
    /// More than half is stopped.
    fn default() -> Self {
        DeletionLimit::Percent(50)
    }
}

impl FromStr for DeletionLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || {
            format!(
                "{s:?} is not a deletion limit: give a count such as `20`, or a share from `0%` to `100%` such as `50%`"
            )
        };
        match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(DeletionLimit::Percent(p)),
                _ => Err(bad()),
            },
            None => s.parse::<u64>().map(DeletionLimit::Count).map_err(|_| bad()),
        }
    }
}

impl fmt::Display for DeletionLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeletionLimit::Percent(p) => write!(f, "{p}%"),
            DeletionLimit::Count(n) => write!(f, "{n}"),
        }
    }
}

impl DeletionLimit {
    /// The most deletions allowed out of `of` definitions; `None` when a share does not apply
    /// because the side is small.
    pub fn max(self, of: usize) -> Option<u64> {
        match self {
            DeletionLimit::Percent(p) => (of >= MIN_DEFINITIONS).then(|| of as u64 * u64::from(p) / 100),
            DeletionLimit::Count(n) => Some(n),
        }
    }
}

/// Counts the deletions a plan makes on the side that `mode` writes, out of `of` definitions
/// that side holds, and says whether the run may make them. `None` when it deletes nothing.
///
/// A deletion that resolves a conflict is the user's explicit choice (`--on-conflict`), so it is
/// not counted; a deferred key deletes nothing in this run.
pub fn check(plan: &Plan, mode: Mode, of: usize, limit: DeletionLimit, allow: bool) -> Option<DeletionGuard> {
    let deletions = plan
        .items
        .iter()
        .filter(|i| !i.was_conflict)
        .filter(|i| match (&i.action, mode) {
            (Action::WriteGit(None), Mode::Pull) => i.git.is_some(),
            (Action::SendPlatform(None), Mode::Push) => i.platform.is_some(),
            _ => false,
        })
        .count();
    if deletions == 0 {
        return None;
    }
    let max = limit.max(of);
    let exceeded = max.is_some_and(|m| deletions as u64 > m);
    Some(DeletionGuard {
        side: match mode {
            Mode::Pull => Side::Git,
            Mode::Push => Side::Platform,
        },
        deletions,
        of,
        limit: limit.to_string(),
        max,
        exceeded,
        allowed: !exceeded || allow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Direction;
    use crate::digest::Digest;
    use crate::engine::plan::{Digests, Preference};
    use crate::model::Key;

    fn side(n: usize) -> Digests {
        (0..n).map(|i| (Key::new("workflow", format!("w{i}")), Digest::of_canonical(&i.to_string()))).collect()
    }

    /// A push from a branch that kept `kept` of `n` agreed definitions.
    fn push_keeping(n: usize, kept: usize, limit: DeletionLimit) -> Option<DeletionGuard> {
        let base = side(n);
        let git: Digests = base.iter().take(kept).map(|(k, d)| (k.clone(), d.clone())).collect();
        let p = crate::engine::plan::plan(Mode::Push, Direction::Bidirectional, Preference::Fail, &base, &git, &base);
        check(&p, Mode::Push, n, limit, false)
    }

    #[test]
    fn limits_parse_and_print_as_given() {
        for (text, want) in
            [("50%", DeletionLimit::Percent(50)), ("0", DeletionLimit::Count(0)), (" 20 ", DeletionLimit::Count(20))]
        {
            let got: DeletionLimit = text.parse().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.to_string(), text.trim());
        }
        for bad in ["", "%", "101%", "-1", "1.5%", "half", "20 defs"] {
            let e = bad.parse::<DeletionLimit>().unwrap_err();
            assert!(e.contains("`50%`"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn more_than_half_of_ten_or_more_is_stopped() {
        let half = DeletionLimit::default();
        assert!(!push_keeping(10, 5, half).unwrap().exceeded, "5 of 10 is half, not more");
        let g = push_keeping(10, 4, half).unwrap();
        assert!(g.exceeded && !g.allowed);
        assert_eq!((g.side, g.deletions, g.of, g.max), (Side::Platform, 6, 10, Some(5)));
        // A small project may lose everything.
        let g = push_keeping(9, 0, half).unwrap();
        assert_eq!((g.deletions, g.max, g.exceeded), (9, None, false));
        assert!(push_keeping(9, 9, half).is_none());
    }

    #[test]
    fn a_count_applies_to_any_size() {
        let g = push_keeping(3, 0, DeletionLimit::Count(2)).unwrap();
        assert!(g.exceeded && !g.allowed);
        assert!(!push_keeping(3, 1, DeletionLimit::Count(2)).unwrap().exceeded);
    }

    #[test]
    fn allowing_lets_an_exceeded_limit_through_and_says_so() {
        let base = side(20);
        let p = crate::engine::plan::plan(
            Mode::Push,
            Direction::Bidirectional,
            Preference::Fail,
            &base,
            &Digests::new(),
            &base,
        );
        let g = check(&p, Mode::Push, 20, DeletionLimit::default(), true).unwrap();
        assert!(g.exceeded && g.allowed);
    }

    #[test]
    fn conflicts_and_deferred_keys_do_not_count() {
        // Git deleted every key while the platform edited each: every deletion is a conflict.
        let base = side(20);
        let platform: Digests = base.keys().map(|k| (k.clone(), Digest::of_canonical("edited"))).collect();
        for prefer in [Preference::Git, Preference::Platform] {
            let p = crate::engine::plan::plan(
                Mode::Push,
                Direction::Bidirectional,
                prefer,
                &base,
                &Digests::new(),
                &platform,
            );
            assert_eq!(p.items.len(), 20);
            assert!(check(&p, Mode::Push, 20, DeletionLimit::Count(0), false).is_none(), "{prefer:?}");
        }
        // The pull side: the platform deleted every key while Git edited each.
        let git: Digests = base.keys().map(|k| (k.clone(), Digest::of_canonical("edited"))).collect();
        let p = crate::engine::plan::plan(
            Mode::Pull,
            Direction::Bidirectional,
            Preference::Platform,
            &base,
            &git,
            &Digests::new(),
        );
        assert!(check(&p, Mode::Pull, 20, DeletionLimit::Count(0), false).is_none());
    }

    #[test]
    fn a_pull_counts_the_files_it_would_delete() {
        let base = side(12);
        let p = crate::engine::plan::plan(
            Mode::Pull,
            Direction::Bidirectional,
            Preference::Fail,
            &base,
            &base,
            &Digests::new(),
        );
        let g = check(&p, Mode::Pull, 12, DeletionLimit::default(), false).unwrap();
        assert_eq!((g.side, g.deletions, g.of, g.allowed), (Side::Git, 12, 12, false));
        // A one-way link deletes whatever the platform lacks, base or not.
        let p = crate::engine::plan::plan(
            Mode::Pull,
            Direction::PlatformToGit,
            Preference::Fail,
            &Digests::new(),
            &base,
            &Digests::new(),
        );
        assert!(!check(&p, Mode::Pull, 12, DeletionLimit::default(), false).unwrap().allowed);
    }
}
