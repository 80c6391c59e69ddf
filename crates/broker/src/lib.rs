//! Message transport between roles: job dispatch by priority and the lifecycle event feed.
//!
//! The in-process transport ([`InProcessBroker`]) serves `distriqueue serve`; RabbitMQ comes
//! with the distributed issue behind the same operations. The broker only carries messages:
//! it never decides anything about a job (DESIGN.md, "Who owns what").

mod memory;

pub use memory::{EventReceiver, InProcessBroker};
