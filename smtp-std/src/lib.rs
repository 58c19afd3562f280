//! Blocking `std::net` binding of [`smtp_proto`]: an embeddable SMTP server, a client and the
//! `smtp-std` program. Work in progress: the server lands with issue #4.
#![forbid(unsafe_code)]

pub use smtp_proto as proto;
