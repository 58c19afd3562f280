//! A `no_std`, sans-IO, heap-free SMTP protocol core.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod data;
pub mod ehlo;
pub mod parse;
pub mod reply;
pub mod sasl;
pub mod server;
