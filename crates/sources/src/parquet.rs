//! parquet models (in progress).
