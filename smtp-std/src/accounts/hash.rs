//! Password hashes in Dovecot's `{SCHEME}` form.
