//! Accounts of the mail server: users with hashed passwords (Dovecot's passwd-file), aliases,
//! subaddressing and catch-all, and the one function that resolves a recipient.

pub mod hash;
pub mod passwd;
