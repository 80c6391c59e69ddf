//! The `distriqueue` library: the composition root ([`start`]), which starts any set of
//! DistriQueue's roles in one process from one [`Config`], and the configuration itself
//! ([`config`]: layered settings, one declaration each). The binary (`main.rs`) and the tests
//! start DistriQueue through here.

mod adapters;
pub mod config;
mod start;

pub use config::{Config, Role};
pub use start::{start, Started};
