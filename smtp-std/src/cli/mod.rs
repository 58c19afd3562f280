//! The commands of the `smtp-std` program, one file each; each a thin layer over the library.

#[cfg(feature = "auth")]
pub(crate) mod check;
#[cfg(feature = "auth")]
pub(crate) mod dkim_keygen;
#[cfg(feature = "auth")]
pub(crate) mod queue;
#[cfg(feature = "auth")]
pub(crate) mod quickstart;
#[cfg(feature = "auth")]
pub(crate) mod records;
pub(crate) mod send;
pub(crate) mod serve;
pub(crate) mod user;
