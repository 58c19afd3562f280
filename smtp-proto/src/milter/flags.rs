//! The numbers of the protocol: command and reply bytes, action and protocol flags, stages.
//!
//! Values as libmilter's `mfdef.h` defines them for protocol version 6 (Sendmail 8.14 and
//! later, Postfix 2.6 and later).

use core::fmt;

/// The protocol version we speak.
pub const VERSION: u32 = 6;

/// The oldest milter protocol version accepted in the milter's answer to the negotiation.
pub const MIN_VERSION: u32 = 2;

/// The largest body chunk sent in one `SMFIC_BODY` packet (libmilter's `MILTER_CHUNK_SIZE`).
pub const MAX_CHUNK: usize = 65_535;

/// Commands, MTA → milter (`SMFIC_*`).
pub mod command {
    /// `SMFIC_ABORT`: the current message is abandoned.
    pub const ABORT: u8 = b'A';
    /// `SMFIC_BODY`: a body chunk.
    pub const BODY: u8 = b'B';
    /// `SMFIC_CONNECT`: host name, family, port, address.
    pub const CONNECT: u8 = b'C';
    /// `SMFIC_MACRO`: macros for the next command.
    pub const MACRO: u8 = b'D';
    /// `SMFIC_BODYEOB`: the end of the message.
    pub const END_OF_MESSAGE: u8 = b'E';
    /// `SMFIC_HELO`: the HELO/EHLO argument.
    pub const HELO: u8 = b'H';
    /// `SMFIC_HEADER`: one header field, name and value.
    pub const HEADER: u8 = b'L';
    /// `SMFIC_MAIL`: the envelope sender and its ESMTP arguments.
    pub const MAIL: u8 = b'M';
    /// `SMFIC_EOH`: the end of the header block.
    pub const END_OF_HEADERS: u8 = b'N';
    /// `SMFIC_OPTNEG`: option negotiation.
    pub const OPTNEG: u8 = b'O';
    /// `SMFIC_QUIT`: the connection ends.
    pub const QUIT: u8 = b'Q';
    /// `SMFIC_RCPT`: one envelope recipient and its ESMTP arguments.
    pub const RCPT: u8 = b'R';
    /// `SMFIC_DATA`: the DATA command.
    pub const DATA: u8 = b'T';
}

/// Replies, milter → MTA (`SMFIR_*`).
pub mod reply {
    /// `SMFIR_ADDRCPT`: add a recipient.
    pub const ADD_RCPT: u8 = b'+';
    /// `SMFIR_DELRCPT`: remove a recipient.
    pub const DEL_RCPT: u8 = b'-';
    /// `SMFIR_ADDRCPT_PAR`: add a recipient with ESMTP arguments.
    pub const ADD_RCPT_PAR: u8 = b'2';
    /// `SMFIR_SHUTDOWN`: the milter shuts down (answer 421).
    pub const SHUTDOWN: u8 = b'4';
    /// `SMFIR_ACCEPT`: accept, no more filtering.
    pub const ACCEPT: u8 = b'a';
    /// `SMFIR_REPLBODY`: a chunk of the replacement body.
    pub const REPLACE_BODY: u8 = b'b';
    /// `SMFIR_CONTINUE`: go on.
    pub const CONTINUE: u8 = b'c';
    /// `SMFIR_DISCARD`: accept and drop the message.
    pub const DISCARD: u8 = b'd';
    /// `SMFIR_CHGFROM`: change the envelope sender.
    pub const CHANGE_FROM: u8 = b'e';
    /// `SMFIR_CONN_FAIL`: fail the connection.
    pub const CONNECTION_FAILURE: u8 = b'f';
    /// `SMFIR_ADDHEADER`: append a header field.
    pub const ADD_HEADER: u8 = b'h';
    /// `SMFIR_INSHEADER`: insert a header field at an index.
    pub const INSERT_HEADER: u8 = b'i';
    /// `SMFIR_SETSYMLIST`: (in the negotiation only) the macros wanted per stage.
    pub const SET_SYMLIST: u8 = b'l';
    /// `SMFIR_CHGHEADER`: change (or delete) the n-th field of a name.
    pub const CHANGE_HEADER: u8 = b'm';
    /// `SMFIR_PROGRESS`: still working, keep waiting.
    pub const PROGRESS: u8 = b'p';
    /// `SMFIR_QUARANTINE`: hold the message, with a reason.
    pub const QUARANTINE: u8 = b'q';
    /// `SMFIR_REJECT`: reject (5xx).
    pub const REJECT: u8 = b'r';
    /// `SMFIR_SKIP`: send no more body chunks.
    pub const SKIP: u8 = b's';
    /// `SMFIR_TEMPFAIL`: temporary failure (4xx).
    pub const TEMPFAIL: u8 = b't';
    /// `SMFIR_REPLYCODE`: reject or tempfail with this SMTP reply.
    pub const REPLY_CODE: u8 = b'y';
    /// `SMFIC_OPTNEG` echoed: the milter's answer to the negotiation.
    pub const OPTNEG: u8 = b'O';
}

macro_rules! flags {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $flag:ident = $value:expr;)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub u32);

        impl $name {
            $($(#[$fdoc])* pub const $flag: $name = $name($value);)*
            /// No flag.
            pub const NONE: $name = $name(0);

            /// Whether every flag of `other` is set.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// These flags and those of `other`.
            #[must_use]
            pub const fn with(self, other: $name) -> $name {
                $name(self.0 | other.0)
            }

            /// These flags without those of `other`.
            #[must_use]
            pub const fn without(self, other: $name) -> $name {
                $name(self.0 & !other.0)
            }

            /// The flags set in both.
            #[must_use]
            pub const fn and(self, other: $name) -> $name {
                $name(self.0 & other.0)
            }

            /// Whether no flag is set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                let mut first = true;
                let mut rest = self.0;
                $(
                    if $value != 0 && self.0 & $value == $value {
                        if !first { f.write_str("|")?; }
                        f.write_str(stringify!($flag))?;
                        first = false;
                        rest &= !$value;
                    }
                )*
                if rest != 0 {
                    if !first { f.write_str("|")?; }
                    write!(f, "{rest:#x}")?;
                }
                f.write_str(")")
            }
        }
    };
}

flags! {
    /// What the milter may do to a message (`SMFIF_*`): the MTA offers a set, the milter
    /// answers with those it will use.
    Actions {
        /// `SMFIF_ADDHDRS`: add and insert header fields.
        ADD_HEADERS = 0x01;
        /// `SMFIF_CHGBODY`: replace the body.
        CHANGE_BODY = 0x02;
        /// `SMFIF_ADDRCPT`: add recipients.
        ADD_RCPT = 0x04;
        /// `SMFIF_DELRCPT`: remove recipients.
        DEL_RCPT = 0x08;
        /// `SMFIF_CHGHDRS`: change and delete header fields.
        CHANGE_HEADERS = 0x10;
        /// `SMFIF_QUARANTINE`: quarantine the message.
        QUARANTINE = 0x20;
        /// `SMFIF_CHGFROM`: change the envelope sender.
        CHANGE_FROM = 0x40;
        /// `SMFIF_ADDRCPT_PAR`: add recipients with ESMTP arguments.
        ADD_RCPT_PAR = 0x80;
        /// `SMFIF_SETSYMLIST`: ask for a list of macros per stage.
        SET_SYMLIST = 0x100;
    }
}

impl Actions {
    /// Every action of protocol version 6.
    pub const ALL: Actions = Actions(0x1ff);
}

flags! {
    /// Protocol steps (`SMFIP_*`): stages the milter does not want (`NO_*`), stages it will
    /// not answer (`NR_*`, no reply), and protocol features. The MTA offers the set it can
    /// honour; the milter answers with those it asks for.
    Protocol {
        /// `SMFIP_NOCONNECT`: no connect information.
        NO_CONNECT = 0x1;
        /// `SMFIP_NOHELO`: no HELO.
        NO_HELO = 0x2;
        /// `SMFIP_NOMAIL`: no MAIL.
        NO_MAIL = 0x4;
        /// `SMFIP_NORCPT`: no RCPT.
        NO_RCPT = 0x8;
        /// `SMFIP_NOBODY`: no body chunks.
        NO_BODY = 0x10;
        /// `SMFIP_NOHDRS`: no header fields.
        NO_HEADERS = 0x20;
        /// `SMFIP_NOEOH`: no end of headers.
        NO_END_OF_HEADERS = 0x40;
        /// `SMFIP_NR_HDR`: no reply to each header field.
        NR_HEADER = 0x80;
        /// `SMFIP_NOUNKNOWN`: no unknown SMTP commands.
        NO_UNKNOWN = 0x100;
        /// `SMFIP_NODATA`: no DATA.
        NO_DATA = 0x200;
        /// `SMFIP_SKIP`: the MTA understands `SMFIR_SKIP` in answer to a body chunk.
        SKIP = 0x400;
        /// `SMFIP_RCPT_REJ`: also send the recipients the MTA refused.
        RCPT_REJECTED = 0x800;
        /// `SMFIP_NR_CONN`: no reply to connect.
        NR_CONNECT = 0x1000;
        /// `SMFIP_NR_HELO`: no reply to HELO.
        NR_HELO = 0x2000;
        /// `SMFIP_NR_MAIL`: no reply to MAIL.
        NR_MAIL = 0x4000;
        /// `SMFIP_NR_RCPT`: no reply to RCPT.
        NR_RCPT = 0x8000;
        /// `SMFIP_NR_DATA`: no reply to DATA.
        NR_DATA = 0x10000;
        /// `SMFIP_NR_UNKN`: no reply to unknown commands.
        NR_UNKNOWN = 0x20000;
        /// `SMFIP_NR_EOH`: no reply to the end of headers.
        NR_END_OF_HEADERS = 0x40000;
        /// `SMFIP_NR_BODY`: no reply to body chunks.
        NR_BODY = 0x80000;
        /// `SMFIP_HDR_LEADSPC`: header values keep the space after the colon, both ways.
        HEADER_LEADING_SPACE = 0x100000;
        /// `SMFIP_MDS_256K`: packets up to 256 KiB (not offered here).
        MAX_DATA_256K = 0x1000_0000;
        /// `SMFIP_MDS_1M`: packets up to 1 MiB (not offered here).
        MAX_DATA_1M = 0x2000_0000;
    }
}

impl Protocol {
    /// What this implementation honours and offers by default: every `NO_*` and `NR_*` step,
    /// `SKIP` and `HEADER_LEADING_SPACE` (not `RCPT_REJECTED`: refused recipients are never
    /// sent, nor the larger packet sizes).
    pub const OFFER: Protocol = Protocol(0x1f_f7ff);
}

/// A stage of the conversation: a command the MTA sends that the milter may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Option negotiation (`SMFIC_OPTNEG`).
    Negotiate,
    /// The client connected (`SMFIC_CONNECT`).
    Connect,
    /// HELO or EHLO (`SMFIC_HELO`).
    Helo,
    /// MAIL FROM (`SMFIC_MAIL`).
    Mail,
    /// RCPT TO (`SMFIC_RCPT`).
    Rcpt,
    /// DATA (`SMFIC_DATA`).
    Data,
    /// One header field (`SMFIC_HEADER`).
    Header,
    /// The end of the header block (`SMFIC_EOH`).
    EndOfHeaders,
    /// A body chunk (`SMFIC_BODY`).
    Body,
    /// The end of the message (`SMFIC_BODYEOB`): modifications, then the final verdict.
    EndOfMessage,
}

impl Stage {
    /// The command byte that starts this stage.
    pub const fn command(self) -> u8 {
        match self {
            Stage::Negotiate => command::OPTNEG,
            Stage::Connect => command::CONNECT,
            Stage::Helo => command::HELO,
            Stage::Mail => command::MAIL,
            Stage::Rcpt => command::RCPT,
            Stage::Data => command::DATA,
            Stage::Header => command::HEADER,
            Stage::EndOfHeaders => command::END_OF_HEADERS,
            Stage::Body => command::BODY,
            Stage::EndOfMessage => command::END_OF_MESSAGE,
        }
    }

    /// The protocol flags that leave this stage out (`NO_*`) and that leave its reply out
    /// (`NR_*`).
    pub(crate) const fn flags(self) -> (Protocol, Protocol) {
        match self {
            Stage::Negotiate | Stage::EndOfMessage => (Protocol::NONE, Protocol::NONE),
            Stage::Connect => (Protocol::NO_CONNECT, Protocol::NR_CONNECT),
            Stage::Helo => (Protocol::NO_HELO, Protocol::NR_HELO),
            Stage::Mail => (Protocol::NO_MAIL, Protocol::NR_MAIL),
            Stage::Rcpt => (Protocol::NO_RCPT, Protocol::NR_RCPT),
            Stage::Data => (Protocol::NO_DATA, Protocol::NR_DATA),
            Stage::Header => (Protocol::NO_HEADERS, Protocol::NR_HEADER),
            Stage::EndOfHeaders => (Protocol::NO_END_OF_HEADERS, Protocol::NR_END_OF_HEADERS),
            Stage::Body => (Protocol::NO_BODY, Protocol::NR_BODY),
        }
    }

    /// The stage number of `SMFIR_SETSYMLIST` (`SMFIM_*`), for the stages that have one.
    pub const fn macro_stage(self) -> Option<u32> {
        match self {
            Stage::Connect => Some(0),
            Stage::Helo => Some(1),
            Stage::Mail => Some(2),
            Stage::Rcpt => Some(3),
            Stage::Data => Some(4),
            Stage::EndOfMessage => Some(5),
            Stage::EndOfHeaders => Some(6),
            _ => None,
        }
    }

    /// The stage of a `SMFIR_SETSYMLIST` stage number.
    pub const fn from_macro_stage(n: u32) -> Option<Stage> {
        Some(match n {
            0 => Stage::Connect,
            1 => Stage::Helo,
            2 => Stage::Mail,
            3 => Stage::Rcpt,
            4 => Stage::Data,
            5 => Stage::EndOfMessage,
            6 => Stage::EndOfHeaders,
            _ => return None,
        })
    }
}
