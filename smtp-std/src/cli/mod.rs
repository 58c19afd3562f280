//! The commands of the `smtp-std` program, one file each; each a thin layer over the library.

pub(crate) mod check;
pub(crate) mod dkim_keygen;
pub(crate) mod queue;
pub(crate) mod quickstart;
pub(crate) mod records;
pub(crate) mod reload;
pub(crate) mod reports;
pub(crate) mod send;
pub(crate) mod serve;
pub(crate) mod user;
