//! Model sources.
