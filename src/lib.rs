//! cleanmail-operator: the SCIM 2.0 endpoint that Microsoft Entra ID provisions into, and the
//! controller that turns the resulting `CleanmailUser` resources into mailbox accounts.
//!
//! Data flows one way: [`scim`] (HTTP edge) writes resources, [`controller`] reconciles them,
//! [`backend`] applies them to a mailbox store. The SCIM edge never calls a backend, and backends
//! know nothing of Kubernetes. Both the edge and the controllers read one [`cache`] of the
//! resources, fed by one watch per kind.

pub mod backend;
pub mod cache;
pub mod controller;
pub mod crd;
pub mod run;
pub mod scim;
pub mod scope;
pub mod telemetry;
pub mod tenant;

/// The API group of every resource this operator defines, also the prefix of its finalizers.
pub const GROUP: &str = "cleanmail.ch";
