//! The durable outbound queue: submitted mail for other domains (and bounces, and forwarded
//! mail) waits here until delivered, bounced, or expired.
//!
//! - [`store`]: one entry per message under `<data_dir>/queue/` (the message, its envelope
//!   with per-recipient state), fsynced before the `250`, one writer at a time.
//! - [`schedule`]: when to retry, when to give up, when to send the delay notice.
//! - [`worker`]: delivery workers (bounded in number): the next attempt time is made durable
//!   before an attempt starts, each recipient's outcome after it; bounces (RFC 3464) when a
//!   recipient fails for good or the lifetime runs out.
//! - [`corrupt`]: damaged entries, kept in `corrupt/`, shown, bounced or deleted by hand.
//! - [`unwritten`]: on a full disk, what cannot be written waits in memory; delivery goes on.
//! - [`notify`]: which delivery status notifications are sent, to whom (and `queue bounce`).
//! - [`dsn`]: the delivery status notifications themselves (RFC 3464's format).

pub mod corrupt;
pub mod dsn;
mod entry;
mod group_sync;
pub mod notify;
pub mod recycled;
pub mod schedule;
pub mod store;
pub mod unwritten;
pub mod worker;

pub use schedule::Schedule;
pub use store::{Entry, Queue, Recipient, State};
