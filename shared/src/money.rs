//! Exact money conversion (being written).
