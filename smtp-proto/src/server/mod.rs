//! The server state machine.
