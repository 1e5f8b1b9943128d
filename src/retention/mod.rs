//! Retention, quotas and deletion (docs/operations.md, "Retention, quotas and deletion"):
//! this node's index of stored files (`index`), kept by one thread (`thread`) that expires,
//! evicts and deletes, the totals quotas are decided on (`totals`), the walk that rebuilds the
//! index (`scan`), and the `files` command's control socket (`control`).

pub mod catalog;
pub mod command;
pub mod control;
pub mod index;
pub mod scan;
pub mod thread;
pub mod totals;

pub use catalog::{Catalog, Reservation, Settings};
pub use index::{Entry, Filter};
pub use thread::Why;
pub use totals::{Limits, Refusal, Usage};
