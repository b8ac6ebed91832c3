//! postgres models (in progress).
