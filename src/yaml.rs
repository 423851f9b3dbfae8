//! Definition files: parsing with serde-saphyr under the contract's YAML 1.2 rules and budgets,
//! and deterministic rendering. STUB: to be implemented.

use crate::model::Definition;

/// A definition file that cannot be used, with where the parser found the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

/// Parses one definition file and checks it against contract part 1 (kind, name, spec).
pub fn parse(_text: &[u8]) -> Result<Definition, ParseError> {
    unimplemented!()
}

/// Renders a definition as the bytes of its file. Deterministic.
pub fn render(_definition: &Definition) -> String {
    unimplemented!()
}
