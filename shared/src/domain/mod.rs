//! Domain rules: events → members, payments, ledger (being written).
