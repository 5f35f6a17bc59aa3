//! HTTP routes: the public webhook endpoints, the ops endpoints, and the admin API with its
//! ops console (on the ops listener).

pub mod admin;
pub mod bank;
pub mod ops;
pub mod rejected;
pub mod webhook;
