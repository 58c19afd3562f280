//! Where a session keeps its bytes: the [`Buffers`] trait and its three kinds.

/// Size of the [`Inline`] output queue.
pub const OUTPUT_BUFFER: usize = 4096;
/// Size of the [`Inline`] SASL buffer: the decoded size of the longest AUTH line the default
/// [`Config::max_auth_line`](super::Config::max_auth_line) (12288) allows.
pub const SASL_BUFFER: usize = 9216;
/// Free output space the core keeps before it processes more input: every reply one input line
/// can make the core write (including the EHLO response at its largest, and a `421` after it)
/// fits in it.
pub(super) const RESERVE: usize = 1200;
/// The smallest output queue a session accepts ([`Server::with_buffers`](super::Server::with_buffers)
/// refuses a shorter one): the free space the core keeps before it reads another command.
pub const MIN_OUTPUT_BUFFER: usize = RESERVE;

/// The SASL buffer that holds every payload an AUTH line of `max_auth_line` octets (CRLF
/// included) can carry, decoded: the size the core asks [`Buffers::acquire_sasl`] for.
///
/// ```
/// use smtp_proto::server::{sasl_buffer_for, SASL_BUFFER};
/// assert_eq!(sasl_buffer_for(12288), SASL_BUFFER);
/// ```
pub const fn sasl_buffer_for(max_auth_line: usize) -> usize {
    max_auth_line.div_ceil(4).saturating_mul(3)
}

/// Where a [`Server`](super::Server) session keeps its bytes: the output queue and the SASL buffer.
///
/// A session needs two buffers besides its small fixed state (about 600 bytes):
/// - the **output queue**, always: replies wait in it until
///   [`Server::poll_transmit`](super::Server::poll_transmit) takes them. It must hold at least
///   [`MIN_OUTPUT_BUFFER`] octets (the largest single reply the core writes, the EHLO
///   response, fits in it, and the core keeps that much free before it reads another
///   pipelined command). Larger queues batch more pipelined replies per drain; any size from
///   the minimum up gives the same reply bytes in the same order.
/// - the **SASL buffer**, only while an AUTH exchange runs: the decoded AUTH payloads (the
///   credentials, a SASL response). The core asks for it when an AUTH command passes its
///   checks ([`Buffers::acquire_sasl`]) and gives it back when the exchange ends with the
///   decision, a cancel, an error or the end of the session ([`Buffers::release_sasl`]),
///   after overwriting the decoded bytes with zeros. When none can be had, the AUTH command
///   is answered `454 4.7.0 Temporary authentication failure`. A payload longer than the
///   buffer is answered `500 5.5.6`, like a line over the AUTH line limit
///   ([`Config::max_auth_line`](super::Config::max_auth_line)); the default limit (12288
///   octets) decodes to at most [`SASL_BUFFER`] octets ([`sasl_buffer_for`]). LOGIN's user
///   name and password share the buffer.
///
/// Three kinds come with the crate:
///
/// | kind | output queue | SASL buffer | `size_of::<Server<_>>()` (64-bit) |
/// |---|---|---|---|
/// | [`Inline`] (the default, `Server::new`) | 4 KiB array | 9 KiB array | 13,896 bytes |
/// | [`Lent`] | a `&mut [u8]` of the caller's, ≥ [`MIN_OUTPUT_BUFFER`] | a `&mut [u8]`, any size (empty: no AUTH) | 616 bytes |
/// | `Heap` (feature `alloc`) | a `Box<[u8]>` of a chosen size | allocated when an exchange starts, freed when it ends | 616 bytes |
///
/// Implement [`Buffers`] for anything else (a pool shared by sessions, static memory).
///
/// ```
/// use smtp_proto::server::{Config, Lent, Server, MIN_OUTPUT_BUFFER};
///
/// // An embedded target: 1.2 KiB of output queue and a 1 KiB SASL buffer, from static memory or
/// // the stack; PLAIN and LOGIN credentials of up to 1 KiB work.
/// let mut out = [0u8; MIN_OUTPUT_BUFFER];
/// let mut sasl = [0u8; 1024];
/// let mut server = Server::with_buffers(Config::new("mx.example.org"), Lent::new(&mut out, &mut sasl)).unwrap();
/// server.greet("ESMTP").unwrap();
/// assert!(core::mem::size_of_val(&server) <= 2048);
/// ```
///
/// The core keeps offsets into both buffers, so `output` must return a slice of the same
/// length on every call, and `sasl`/`sasl_mut` the same slice from `acquire_sasl` until
/// `release_sasl`; a session whose buffers change under it may panic (never anything worse:
/// the crate has no `unsafe` here).
pub trait Buffers {
    /// The output queue, at least [`MIN_OUTPUT_BUFFER`] octets.
    fn output(&mut self) -> &mut [u8];

    /// An AUTH exchange starts: make the SASL buffer available. `wanted` is
    /// [`sasl_buffer_for`] the configured AUTH line limit; a shorter buffer works for shorter
    /// payloads (longer ones get `500 5.5.6`). Return `false` when none can be had now: the
    /// core then answers the AUTH command `454 4.7.0`.
    fn acquire_sasl(&mut self, wanted: usize) -> bool;

    /// The SASL buffer (between `acquire_sasl` and `release_sasl`).
    fn sasl(&self) -> &[u8];

    /// The SASL buffer, to decode into (between `acquire_sasl` and `release_sasl`).
    fn sasl_mut(&mut self) -> &mut [u8];

    /// The exchange ended (its decoded bytes are zeroed): the SASL buffer may go until the next
    /// `acquire_sasl`.
    fn release_sasl(&mut self) {}
}

/// Both buffers inside the session, as fixed arrays: [`OUTPUT_BUFFER`] + [`SASL_BUFFER`]
/// octets. What [`Server::new`](super::Server::new) uses; no setup, no failure, 13 KiB.
#[derive(Clone)]
pub struct Inline {
    out: [u8; OUTPUT_BUFFER],
    sasl: [u8; SASL_BUFFER],
}

impl Inline {
    /// Zeroed buffers.
    #[inline(always)]
    pub const fn new() -> Self {
        Self { out: [0; OUTPUT_BUFFER], sasl: [0; SASL_BUFFER] }
    }
}

impl Default for Inline {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Inline {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Inline").field("output", &OUTPUT_BUFFER).field("sasl", &SASL_BUFFER).finish()
    }
}

impl Buffers for Inline {
    #[inline]
    fn output(&mut self) -> &mut [u8] {
        &mut self.out
    }
    fn acquire_sasl(&mut self, _wanted: usize) -> bool {
        true
    }
    fn sasl(&self) -> &[u8] {
        &self.sasl
    }
    fn sasl_mut(&mut self) -> &mut [u8] {
        &mut self.sasl
    }
}

/// Buffers the caller lends for the session's lifetime: any output queue of at least
/// [`MIN_OUTPUT_BUFFER`] octets (checked by [`Server::with_buffers`](super::Server::with_buffers)),
/// and a SASL buffer of any size. An empty SASL buffer means no AUTH: an AUTH command is
/// answered `454 4.7.0` (better: do not offer AUTH).
pub struct Lent<'a> {
    output: &'a mut [u8],
    sasl: &'a mut [u8],
}

impl<'a> Lent<'a> {
    /// Lends `output` as the output queue and `sasl` as the SASL buffer.
    pub fn new(output: &'a mut [u8], sasl: &'a mut [u8]) -> Self {
        Self { output, sasl }
    }
}

impl core::fmt::Debug for Lent<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Lent").field("output", &self.output.len()).field("sasl", &self.sasl.len()).finish()
    }
}

impl Buffers for Lent<'_> {
    #[inline]
    fn output(&mut self) -> &mut [u8] {
        self.output
    }
    fn acquire_sasl(&mut self, _wanted: usize) -> bool {
        !self.sasl.is_empty()
    }
    fn sasl(&self) -> &[u8] {
        self.sasl
    }
    fn sasl_mut(&mut self) -> &mut [u8] {
        self.sasl
    }
}

#[cfg(feature = "alloc")]
pub use heap::Heap;

#[cfg(feature = "alloc")]
mod heap {
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    use super::{Buffers, OUTPUT_BUFFER};

    /// Buffers on the heap (feature `alloc`): an output queue of a chosen size, allocated with
    /// the session, and a SASL buffer of the size the configuration needs
    /// ([`sasl_buffer_for`](super::sasl_buffer_for)), allocated when an AUTH exchange starts
    /// and freed when it ends. If that allocation fails, the AUTH is answered `454 4.7.0`.
    #[derive(Clone)]
    pub struct Heap {
        output: Box<[u8]>,
        sasl: Option<Box<[u8]>>,
    }

    impl Heap {
        /// An output queue of `output_len` octets (at least
        /// [`MIN_OUTPUT_BUFFER`](super::MIN_OUTPUT_BUFFER), checked by
        /// [`Server::with_buffers`](crate::server::Server::with_buffers)).
        pub fn new(output_len: usize) -> Self {
            Self { output: alloc::vec![0; output_len].into_boxed_slice(), sasl: None }
        }

        /// Whether a SASL buffer is allocated now (an AUTH exchange runs).
        pub fn has_sasl(&self) -> bool {
            self.sasl.is_some()
        }
    }

    impl Default for Heap {
        /// A [`OUTPUT_BUFFER`]-octet output queue, like [`Inline`](super::Inline)'s.
        fn default() -> Self {
            Self::new(OUTPUT_BUFFER)
        }
    }

    impl core::fmt::Debug for Heap {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("Heap")
                .field("output", &self.output.len())
                .field("sasl", &self.sasl.as_ref().map(|s| s.len()))
                .finish()
        }
    }

    impl Buffers for Heap {
        #[inline]
        fn output(&mut self) -> &mut [u8] {
            &mut self.output
        }
        fn acquire_sasl(&mut self, wanted: usize) -> bool {
            if self.sasl.is_none() {
                let mut buf = Vec::new();
                if buf.try_reserve_exact(wanted).is_err() {
                    return false;
                }
                buf.resize(wanted, 0);
                self.sasl = Some(buf.into_boxed_slice());
            }
            true
        }
        fn sasl(&self) -> &[u8] {
            self.sasl.as_deref().unwrap_or(&[])
        }
        fn sasl_mut(&mut self) -> &mut [u8] {
            self.sasl.as_deref_mut().unwrap_or(&mut [])
        }
        fn release_sasl(&mut self) {
            self.sasl = None;
        }
    }
}

/// [`Server::with_buffers`](super::Server::with_buffers) was given an output queue shorter than
/// [`MIN_OUTPUT_BUFFER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputTooSmall {
    /// The length it had.
    pub len: usize,
}

impl core::fmt::Display for OutputTooSmall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "output buffer of {} octets, the core needs at least {MIN_OUTPUT_BUFFER}", self.len)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for OutputTooSmall {}
