//! Shared fixtures of the integration tests: one real control plane and one operator per test
//! binary, real databases and a real Dovecot. Every test isolates itself in its own namespace.
#![allow(dead_code)]

pub mod cluster;
pub mod mailstack;
pub mod process;
pub mod scim;
