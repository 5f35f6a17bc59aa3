//! HTTP routes: the public webhook endpoints and the ops endpoints.

pub mod ops;
pub mod webhook;
