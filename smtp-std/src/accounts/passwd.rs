//! Dovecot's passwd-file format: the accounts file.
