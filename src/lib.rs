//! The `distriqueue` library: the composition root ([`start`]), which starts any set of
//! DistriQueue's roles in one process from one [`Config`], and the configuration itself
//! ([`config`]: layered settings, one declaration each), the process's metrics registry
//! ([`metrics`]) and the OpenAPI documents as files ([`openapi`]). The binary (`main.rs`) and the tests
//! start DistriQueue through here.

mod adapters;
pub mod config;
pub mod metrics;
pub mod openapi;
mod start;

pub use config::{Config, Role};
pub use start::{start, Started};
