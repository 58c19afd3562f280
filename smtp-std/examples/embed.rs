//! Embedding smtp-std: print every message, refuse one recipient, and log who connects.
//!
//! ```text
//! cargo run -p smtp-std --example embed
//! swaks --server 127.0.0.1:2526 --to you@example.org
//! ```
use smtp_std::proto::parse::{ForwardPath, RcptParams};
use smtp_std::{Decision, Handler, Options, Server, Session};

#[derive(Clone)]
struct Print;

impl Handler for Print {
    fn rcpt_to(&mut self, _: &Session, to: &ForwardPath<'_>, _: &RcptParams<'_>) -> Decision {
        match to {
            ForwardPath::Mailbox(m) if m.local_part == "nobody" => {
                Decision::reply(550, Some((5, 1, 1)), "No such user")
            }
            _ => Decision::Accept,
        }
    }
    fn data_chunk(&mut self, s: &Session, chunk: &[u8]) -> std::io::Result<()> {
        print!("[{} -> {:?}] {}", s.peer, s.envelope.rcpt_to, String::from_utf8_lossy(chunk));
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let mut server = Server::new(Options::new("localhost").banner("ESMTP embedded").max_clients(10), Print);
    println!("listening on {}", server.listen("127.0.0.1:2526")?);
    server.run()
}
