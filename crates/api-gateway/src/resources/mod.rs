//! The REST resources, one module each, each exporting its routes. Cross-cutting parts (auth,
//! body deadline, the node header) are layered on in `routes.rs`.

pub(crate) mod artifacts;
pub(crate) mod deployments;
pub(crate) mod documents;
pub(crate) mod environments;
pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod keys;
pub(crate) mod lifecycles;
pub(crate) mod metrics;
pub(crate) mod nodes;
pub(crate) mod packages;
pub(crate) mod ping;
pub(crate) mod process_part;
pub(crate) mod projects;
pub(crate) mod runbooks;
pub(crate) mod spaces;
pub(crate) mod targets;
pub(crate) mod tasks;
