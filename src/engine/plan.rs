//! The three-way rules of contract part 4, per key.
//!
//! A plan is a plain value: for every key it says what the run does, given the base `B`, the
//! branch `G` and the platform `P`. Applying it is the only step that writes anything.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::Direction;
use crate::digest::Digest;
use crate::model::Key;

/// The digests of every key on one side; a key that is absent does not exist there.
pub type Digests = BTreeMap<Key, Digest>;

/// A value that carries a digest, so a side's own map (files, manifest entries) can be planned
/// on directly: at 100,000 keys a copy of each map costs tens of MiB.
pub trait HasDigest {
    fn digest(&self) -> &Digest;
}

impl HasDigest for Digest {
    fn digest(&self) -> &Digest {
        self
    }
}

/// A manifest entry: digest and canonical size.
impl HasDigest for (Digest, u64) {
    fn digest(&self) -> &Digest {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pull,
    Push,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preference {
    /// Change nothing and report the conflicts.
    #[default]
    Fail,
    Git,
    Platform,
}

/// What a run does with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pull: write the platform's version to the branch (`None` deletes the file).
    WriteGit(Option<Digest>),
    /// Push: send the branch's version to the platform (`None` sends a delete).
    SendPlatform(Option<Digest>),
    /// Both sides changed the key and no preference resolves it here.
    Conflict,
    /// Both sides changed the key; the preferred side is the other direction's, so the base moves
    /// to this side's digest and the next run in the other direction carries the preferred one.
    Defer(Option<Digest>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: Key,
    pub base: Option<Digest>,
    pub git: Option<Digest>,
    pub platform: Option<Digest>,
    pub action: Action,
    /// Set when this item is a conflict that a preference resolved (written or deferred).
    pub was_conflict: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keys the run changes, defers, or finds in conflict, in key order.
    pub items: Vec<Item>,
    /// Keys on which the branch and the platform agree but whose base is out of date: the run
    /// sends their agreed digest (`None`: both agree the key does not exist).
    pub repairs: Vec<(Key, Option<Digest>)>,
}

impl Plan {
    /// Conflicts that nothing resolved: the run must change nothing.
    pub fn unresolved(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.action == Action::Conflict)
    }

    pub fn has_unresolved(&self) -> bool {
        self.unresolved().next().is_some()
    }

    pub fn writes(&self) -> impl Iterator<Item = (&Item, &Option<Digest>)> {
        self.items.iter().filter_map(|i| match &i.action {
            Action::WriteGit(d) => Some((i, d)),
            _ => None,
        })
    }

    pub fn sends(&self) -> impl Iterator<Item = (&Item, &Option<Digest>)> {
        self.items.iter().filter_map(|i| match &i.action {
            Action::SendPlatform(d) => Some((i, d)),
            _ => None,
        })
    }

    pub fn deferred(&self) -> impl Iterator<Item = (&Item, &Option<Digest>)> {
        self.items.iter().filter_map(|i| match &i.action {
            Action::Defer(d) => Some((i, d)),
            _ => None,
        })
    }
}

/// Plans a run in `mode` on a link of `direction`.
///
/// Refusing a direction (a pull on `git-to-platform`) is the caller's job; here a one-way link
/// simply makes its side win every difference.
pub fn plan<B: HasDigest, G: HasDigest, P: HasDigest>(
    mode: Mode,
    direction: Direction,
    prefer: Preference,
    base: &BTreeMap<Key, B>,
    git: &BTreeMap<Key, G>,
    platform: &BTreeMap<Key, P>,
) -> Plan {
    let keys: BTreeSet<&Key> = base.keys().chain(git.keys()).chain(platform.keys()).collect();
    let mut out = Plan::default();
    for key in keys {
        let b = base.get(key).map(HasDigest::digest);
        let g = git.get(key).map(HasDigest::digest);
        let p = platform.get(key).map(HasDigest::digest);
        if g == p {
            if b != g {
                out.repairs.push((key.clone(), g.cloned()));
            }
            continue;
        }
        let item = |action: Action, was_conflict: bool| Item {
            key: key.clone(),
            base: b.cloned(),
            git: g.cloned(),
            platform: p.cloned(),
            action,
            was_conflict,
        };
        // A one-way link: its source wins every difference, whatever the base says.
        match (direction, mode) {
            (Direction::PlatformToGit, Mode::Pull) => {
                out.items.push(item(Action::WriteGit(p.cloned()), false));
                continue;
            }
            (Direction::GitToPlatform, Mode::Push) => {
                out.items.push(item(Action::SendPlatform(g.cloned()), false));
                continue;
            }
            (Direction::PlatformToGit, Mode::Push) | (Direction::GitToPlatform, Mode::Pull) => continue,
            (Direction::Bidirectional, _) => {}
        }
        let action = if g == b {
            // Only the platform changed it.
            match mode {
                Mode::Pull => Some(item(Action::WriteGit(p.cloned()), false)),
                Mode::Push => None,
            }
        } else if p == b {
            // Only Git changed it.
            match mode {
                Mode::Pull => None,
                Mode::Push => Some(item(Action::SendPlatform(g.cloned()), false)),
            }
        } else {
            // Both changed it, differently.
            Some(match (mode, prefer) {
                (_, Preference::Fail) => item(Action::Conflict, false),
                (Mode::Pull, Preference::Platform) => item(Action::WriteGit(p.cloned()), true),
                (Mode::Push, Preference::Git) => item(Action::SendPlatform(g.cloned()), true),
                // The preferred side is the one the other direction writes: agree on this side's
                // digest, so the next run in the other direction sees only its own side changed.
                (Mode::Pull, Preference::Git) => item(Action::Defer(p.cloned()), true),
                (Mode::Push, Preference::Platform) => item(Action::Defer(g.cloned()), true),
            })
        };
        out.items.extend(action);
    }
    out
}

/// The base after a run: every key where the branch and the platform agree and the base differs
/// takes the agreed digest (`None`: both agree it does not exist); a deferred key takes its
/// deferred digest only if the platform still holds what was planned, so that a key either side
/// moved since the plan stays the conflict it is for the next run.
pub fn agreement<B: HasDigest, G: HasDigest, P: HasDigest>(
    git: &BTreeMap<Key, G>,
    base: &BTreeMap<Key, B>,
    platform: &BTreeMap<Key, P>,
    deferred: &[(Key, Option<Digest>, Option<Digest>)],
) -> Vec<(Key, Option<Digest>)> {
    let on_platform = |key: &Key| platform.get(key).map(HasDigest::digest);
    let mut updates: BTreeMap<Key, Option<Digest>> = BTreeMap::new();
    let keys: BTreeSet<&Key> = git.keys().chain(platform.keys()).chain(base.keys()).collect();
    for key in keys {
        let g = git.get(key).map(HasDigest::digest);
        if g == on_platform(key) && base.get(key).map(HasDigest::digest) != g {
            updates.insert(key.clone(), g.cloned());
        }
    }
    for (key, planned_platform, digest) in deferred {
        if on_platform(key) == planned_platform.as_ref() && !updates.contains_key(key) {
            updates.insert(key.clone(), digest.clone());
        }
    }
    updates.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of_canonical(s)
    }

    fn k() -> Key {
        Key::new("workflow", "w")
    }

    fn one(b: Option<&str>, g: Option<&str>, p: Option<&str>) -> [Digests; 3] {
        let m = |x: Option<&str>| x.map(|x| [(k(), d(x))].into_iter().collect()).unwrap_or_default();
        [m(b), m(g), m(p)]
    }

    fn run(mode: Mode, prefer: Preference, b: Option<&str>, g: Option<&str>, p: Option<&str>) -> Plan {
        let [b, g, p] = one(b, g, p);
        plan(mode, Direction::Bidirectional, prefer, &b, &g, &p)
    }

    #[test]
    fn the_table_of_part_4() {
        use Preference::Fail;
        // G = P: nothing on either side.
        for mode in [Mode::Pull, Mode::Push] {
            assert!(run(mode, Fail, Some("1"), Some("2"), Some("2")).items.is_empty());
        }
        // G = B, P ≠ B: pull writes, push does nothing.
        let p = run(Mode::Pull, Fail, Some("1"), Some("1"), Some("2"));
        assert_eq!(p.items[0].action, Action::WriteGit(Some(d("2"))));
        assert!(run(Mode::Push, Fail, Some("1"), Some("1"), Some("2")).items.is_empty());
        // The platform deleted it: pull deletes the file.
        let p = run(Mode::Pull, Fail, Some("1"), Some("1"), None);
        assert_eq!(p.items[0].action, Action::WriteGit(None));
        // P = B, G ≠ B: push sends, pull does nothing.
        let p = run(Mode::Push, Fail, Some("1"), Some("2"), Some("1"));
        assert_eq!(p.items[0].action, Action::SendPlatform(Some(d("2"))));
        assert!(run(Mode::Pull, Fail, Some("1"), Some("2"), Some("1")).items.is_empty());
        let p = run(Mode::Push, Fail, Some("1"), None, Some("1"));
        assert_eq!(p.items[0].action, Action::SendPlatform(None));
        // All differ: conflict both ways.
        for mode in [Mode::Pull, Mode::Push] {
            let p = run(mode, Fail, Some("1"), Some("2"), Some("3"));
            assert_eq!(p.items[0].action, Action::Conflict);
            assert!(p.has_unresolved());
        }
    }

    #[test]
    fn preferences_write_or_defer() {
        let p = run(Mode::Pull, Preference::Platform, Some("1"), Some("2"), Some("3"));
        assert_eq!(p.items[0].action, Action::WriteGit(Some(d("3"))));
        let p = run(Mode::Pull, Preference::Git, Some("1"), Some("2"), Some("3"));
        assert_eq!(p.items[0].action, Action::Defer(Some(d("3"))));
        let p = run(Mode::Push, Preference::Git, Some("1"), Some("2"), Some("3"));
        assert_eq!(p.items[0].action, Action::SendPlatform(Some(d("2"))));
        let p = run(Mode::Push, Preference::Platform, Some("1"), Some("2"), Some("3"));
        assert_eq!(p.items[0].action, Action::Defer(Some(d("2"))));
        assert!(p.items[0].was_conflict);
    }

    #[test]
    fn an_empty_base_copies_one_sided_keys_and_conflicts_on_differences() {
        // After `link`: a key on one side only is copied, nothing is deleted.
        let p = run(Mode::Pull, Preference::Fail, None, None, Some("1"));
        assert_eq!(p.items[0].action, Action::WriteGit(Some(d("1"))));
        let p = run(Mode::Push, Preference::Fail, None, Some("1"), None);
        assert_eq!(p.items[0].action, Action::SendPlatform(Some(d("1"))));
        assert!(run(Mode::Push, Preference::Fail, None, None, Some("1")).items.is_empty());
        let p = run(Mode::Push, Preference::Fail, None, Some("1"), Some("2"));
        assert_eq!(p.items[0].action, Action::Conflict);
    }

    #[test]
    fn agreement_with_a_stale_base_is_repaired() {
        let p = run(Mode::Push, Preference::Fail, Some("1"), Some("2"), Some("2"));
        assert_eq!(p.repairs, vec![(k(), Some(d("2")))]);
        let p = run(Mode::Pull, Preference::Fail, Some("1"), None, None);
        assert_eq!(p.repairs, vec![(k(), None)]);
        assert!(run(Mode::Pull, Preference::Fail, Some("1"), Some("1"), Some("1")).repairs.is_empty());
    }

    #[test]
    fn one_way_links_ignore_the_base() {
        let [b, g, p] = one(Some("1"), Some("1"), Some("2"));
        let pl = plan(Mode::Push, Direction::GitToPlatform, Preference::Fail, &b, &g, &p);
        assert_eq!(pl.items[0].action, Action::SendPlatform(Some(d("1"))));
        let [b, g, p] = one(Some("1"), Some("2"), Some("1"));
        let pl = plan(Mode::Pull, Direction::PlatformToGit, Preference::Fail, &b, &g, &p);
        assert_eq!(pl.items[0].action, Action::WriteGit(Some(d("1"))));
    }
}
