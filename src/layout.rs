//! Default paths for definitions new to the repository: readable, portable, collision-free and
//! always inside the sync root. STUB: to be implemented.

use crate::model::Key;

/// Places new definitions, avoiding every path already taken (compared without regard to case).
pub struct Layout {}

impl Layout {
    /// `existing`: every file path below the sync root, relative to it, `/`-separated.
    pub fn new<'a>(_existing: impl IntoIterator<Item = &'a str>) -> Self {
        unimplemented!()
    }

    /// The path for `key`, relative to the sync root; it is then taken.
    pub fn place(&mut self, _key: &Key) -> String {
        unimplemented!()
    }
}
