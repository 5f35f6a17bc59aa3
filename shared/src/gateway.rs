//! Gateway API clients (being written).
