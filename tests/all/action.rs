//! Tests: action.
