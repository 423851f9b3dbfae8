//! The three-way rules of contract part 4, per key.
