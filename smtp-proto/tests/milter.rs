//! The milter client machine: scripted milter answers, every script run whole, byte by byte
//! and split at every index (the same events and the same MTA bytes each time), every packet
//! the MTA writes checked octet by octet, and every malformed answer a typed error.

use smtp_proto::milter::{
    Actions, ApiError, Client, Config, Error, Event, Family, Modification, Problem, Progress, Protocol, Stage, Verdict,
};
use smtp_proto::testing::{milter_script, MilterTranscript};

/// A packet: length, command, data.
fn p(command: u8, data: &[u8]) -> Vec<u8> {
    let mut v = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(command);
    v.extend_from_slice(data);
    v
}

/// The negotiation answer: version 6, `actions`, `protocol`, then `extra` (macro lists).
fn optneg(actions: u32, protocol: u32, extra: &[u8]) -> Vec<u8> {
    let mut d = 6u32.to_be_bytes().to_vec();
    d.extend_from_slice(&actions.to_be_bytes());
    d.extend_from_slice(&protocol.to_be_bytes());
    d.extend_from_slice(extra);
    p(b'O', &d)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Runs the script whole, byte by byte and cut at every index; all must agree.
fn all_splits(stream: &[u8]) -> MilterTranscript {
    let whole = milter_script(stream, &[]);
    let bytes: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(milter_script(stream, &bytes), whole, "byte by byte");
    for at in 1..stream.len() {
        assert_eq!(milter_script(stream, &[at]), whole, "cut at {at}");
    }
    whole
}

const C: &[u8] = b"\0\0\0\x01c";

#[test]
fn a_whole_conversation_with_modifications() {
    let stream = cat(&[
        optneg(Actions::ALL.0, 0, b""),
        p(b'c', b""), // connect
        p(b'c', b""), // helo
        p(b'c', b""), // mail
        p(b'c', b""), // rcpt
        p(b'c', b""), // rcpt
        p(b'c', b""), // data
        p(b'c', b""), // header
        p(b'c', b""), // header
        p(b'c', b""), // eoh
        p(b'c', b""), // body
        p(b'c', b""), // body
        p(b'p', b""),
        p(b'h', b"X-Spam\0Yes\0"),
        p(b'i', b"\0\0\0\0X-Top\0first\0"),
        p(b'm', b"\0\0\0\x01Subject\0\0"),
        p(b'm', b"\0\0\0\x02X-Folded\0a\r\n\tb\0"),
        p(b'+', b"<new@example.org>\0"),
        p(b'2', b"<par@example.org>\0NOTIFY=NEVER\0"),
        p(b'-', b"<b@example.org>\0"),
        p(b'e', b"<other@example.net>\0"),
        p(b'b', b"new body\r\n"),
        p(b'q', b"held for review\0"),
        p(b'c', b""),
    ]);
    let t = all_splits(&stream);
    let events: Vec<&str> = t.events.iter().map(String::as_str).collect();
    assert!(events[0].starts_with("Negotiated"), "{events:?}");
    assert_eq!(events.iter().filter(|e| e.ends_with("verdict: Continue }")).count(), 12, "{events:?}");
    let tail = &events[events.len() - 12..];
    assert_eq!(
        tail,
        [
            "Progress",
            "Modification(AddHeader { name: \"X-Spam\", value: \"Yes\" })",
            "Modification(InsertHeader { index: 0, name: \"X-Top\", value: \"first\" })",
            "Modification(ChangeHeader { index: 1, name: \"Subject\", value: \"\" })",
            "Modification(ChangeHeader { index: 2, name: \"X-Folded\", value: \"a\\r\\n\\tb\" })",
            "Modification(AddRecipient { rcpt: \"<new@example.org>\", args: None })",
            "Modification(AddRecipient { rcpt: \"<par@example.org>\", args: Some(\"NOTIFY=NEVER\") })",
            "Modification(DeleteRecipient { rcpt: \"<b@example.org>\" })",
            "Modification(ChangeFrom { from: \"<other@example.net>\", args: None })",
            "Modification(ReplaceBody(\"new body\\r\\n\"))",
            "Modification(Quarantine { reason: \"held for review\" })",
            "Verdict { stage: EndOfMessage, verdict: Continue }",
        ]
    );
    // What the MTA sent, packet by packet.
    let mut expect = Vec::new();
    let mut neg = 6u32.to_be_bytes().to_vec();
    neg.extend_from_slice(&Actions::ALL.0.to_be_bytes());
    neg.extend_from_slice(&Protocol::OFFER.0.to_be_bytes());
    expect.push(p(b'O', &neg));
    expect.push(p(b'D', b"Cj\0mx.example.org\0{daemon_name}\0smtp-std\0{client_addr}\x00192.0.2.1\0"));
    expect.push(p(b'C', b"[192.0.2.1]\x004\x11\xd7192.0.2.1\0"));
    expect.push(p(b'H', b"client.example\0"));
    expect.push(p(b'D', b"M{mail_addr}\0a@client.example\0"));
    expect.push(p(b'M', b"<a@client.example>\0SIZE=100\0"));
    expect.push(p(b'D', b"R{rcpt_addr}\0b@example.org\0"));
    expect.push(p(b'R', b"<b@example.org>\0"));
    expect.push(p(b'D', b"R{rcpt_addr}\0c@example.org\0"));
    expect.push(p(b'R', b"<c@example.org>\0"));
    expect.push(p(b'D', b"Ti\0Q1\0"));
    expect.push(p(b'T', b""));
    expect.push(p(b'L', b"Subject\0hello\0"));
    expect.push(p(b'L', b"From\0a@client.example\0"));
    expect.push(p(b'N', b""));
    expect.push(p(b'B', b"line one\r\n"));
    expect.push(p(b'B', b"line two\r\n"));
    expect.push(p(b'D', b"Ei\0Q1\0"));
    expect.push(p(b'E', b""));
    expect.push(p(b'Q', b""));
    assert_eq!(t.sent.escape_ascii().to_string(), cat(&expect).escape_ascii().to_string());
}

#[test]
fn steps_left_out_and_no_reply_steps() {
    // No HELO, no headers, no body; no reply to connect, RCPT, DATA, EOH.
    let protocol = Protocol::NO_HELO
        .with(Protocol::NO_HEADERS)
        .with(Protocol::NO_BODY)
        .with(Protocol::NR_CONNECT)
        .with(Protocol::NR_RCPT)
        .with(Protocol::NR_DATA)
        .with(Protocol::NR_END_OF_HEADERS);
    let stream = cat(&[
        optneg(Actions::ADD_HEADERS.0, protocol.0, b""),
        p(b'c', b""), // mail
        p(b'h', b"X-Checked\0yes\0"),
        p(b'a', b""), // eom
    ]);
    let t = all_splits(&stream);
    assert_eq!(t.events.len(), 4, "{:?}", t.events);
    assert!(t.events[1].contains("stage: Mail, verdict: Continue"));
    assert!(t.events[3].contains("stage: EndOfMessage, verdict: Accept"));
    let sent = t.sent.escape_ascii().to_string();
    assert!(!sent.contains("Hclient.example"), "no HELO: {sent}");
    assert!(!sent.contains("Subject"), "no headers: {sent}");
    assert!(!sent.contains("line one"), "no body: {sent}");
    assert!(sent.contains("\\x00\\x00\\x00\\x01N"), "EOH sent (no reply): {sent}");
    assert!(sent.ends_with("\\x00\\x00\\x00\\x01Q"), "{sent}");
}

#[test]
fn skip_ends_the_body() {
    let stream = cat(&[
        optneg(0, Protocol::SKIP.0, b""),
        C.repeat(9),
        p(b's', b""), // first body chunk
        p(b'c', b""), // eom
    ]);
    let t = all_splits(&stream);
    assert!(t.events.iter().any(|e| e.contains("stage: Body, verdict: Skip")), "{:?}", t.events);
    let sent = t.sent.escape_ascii().to_string();
    assert!(sent.contains("line one") && !sent.contains("line two"), "{sent}");
    assert!(t.events.last().unwrap().contains("EndOfMessage"));
}

#[test]
fn verdicts_end_the_message() {
    for (answer, name) in [
        (p(b'r', b""), "Reject"),
        (p(b't', b""), "TempFail"),
        (p(b'd', b""), "Discard"),
        (p(b'a', b""), "Accept"),
        (p(b'4', b""), "Shutdown"),
        (p(b'f', b""), "ConnectionFailure"),
    ] {
        // At MAIL: the message ends; the driver quits.
        let stream = cat(&[optneg(0, 0, b""), C.to_vec(), C.to_vec(), answer]);
        let t = all_splits(&stream);
        assert!(t.events.last().unwrap().contains(&format!("stage: Mail, verdict: {name}")), "{:?}", t.events);
        assert!(t.sent.ends_with(b"\0\0\0\x01Q"));
        assert!(!t.sent.escape_ascii().to_string().contains("b@example.org"));
    }
    // A refused recipient refuses that one only.
    let stream =
        cat(&[optneg(0, 0, b""), C.repeat(3), p(b'y', b"550 5.1.1 no such user\0"), C.repeat(7), p(b'c', b"")]);
    let t = all_splits(&stream);
    assert!(t.events[4].contains("code: 550") && t.events[4].contains("no such user"), "{:?}", t.events);
    assert!(t.events.last().unwrap().contains("stage: EndOfMessage, verdict: Continue"), "{:?}", t.events);
}

#[test]
fn reply_codes() {
    let mut m = negotiated(Actions::NONE, Protocol::NONE);
    let mut out = [0u8; 256];
    m.connect(&[], b"h", Family::Unknown, &mut out).unwrap();
    let input = p(b'y', b"554 5.7.1 Spam message rejected\0");
    let Progress::Event(Event::Verdict { stage: Stage::Connect, verdict: Verdict::ReplyCode(r) }) =
        m.handle_input(&input).unwrap().progress
    else {
        panic!("a reply code")
    };
    assert_eq!(
        (r.code, r.enhanced.map(|e| e.to_string()), r.text),
        (554, Some("5.7.1".into()), &b"Spam message rejected"[..])
    );
    // No enhanced code; several lines; a code of another class is text.
    for (raw, code, enhanced, text) in [
        (&b"451 try later"[..], 451, None, &b"try later"[..]),
        (b"550-5.7.1 first\r\n550 5.7.1 second", 550, Some("5.7.1"), b"first"),
        (b"421 5.7.0 odd", 421, None, b"5.7.0 odd"),
        (b"450", 450, None, b""),
    ] {
        let mut m = negotiated(Actions::NONE, Protocol::NONE);
        m.connect(&[], b"h", Family::Unknown, &mut out).unwrap();
        let mut d = raw.to_vec();
        d.push(0);
        let input = p(b'y', &d);
        let Progress::Event(Event::Verdict { verdict: Verdict::ReplyCode(r), .. }) =
            m.handle_input(&input).unwrap().progress
        else {
            panic!("{raw:?}")
        };
        assert_eq!((r.code, r.enhanced.map(|e| e.to_string()).as_deref(), r.text, r.raw), (code, enhanced, text, raw));
    }
    for bad in [&b"250 ok\0"[..], b"55\0", b"5x0 no\0", b"550x\0", b"554 no"] {
        let mut m = negotiated(Actions::NONE, Protocol::NONE);
        m.connect(&[], b"h", Family::Unknown, &mut out).unwrap();
        let e = m.handle_input(&p(b'y', bad)).unwrap_err();
        assert!(matches!(e, Error::Malformed { command: b'y', .. }), "{bad:?}: {e:?}");
    }
}

fn negotiated(actions: Actions, protocol: Protocol) -> Client {
    let mut m = Client::new(Config::new());
    let mut out = [0u8; 64];
    m.negotiate(&mut out).unwrap();
    let input = optneg(actions.0, protocol.0, b"");
    let r = m.handle_input(&input).unwrap();
    assert!(matches!(r.progress, Progress::Event(Event::Negotiated { .. })));
    m
}

/// A client waiting for the end-of-message answer.
fn at_end(actions: Actions) -> Client {
    let mut m = negotiated(
        actions,
        Protocol::NO_CONNECT.with(Protocol::NO_HELO).with(Protocol::NR_MAIL).with(Protocol::NR_RCPT),
    );
    let mut out = [0u8; 256];
    m.connect(&[], b"h", Family::Unknown, &mut out).unwrap();
    m.mail(&[], "<a@b>", &[], &mut out).unwrap();
    m.rcpt(&[], "<c@d>", &[], &mut out).unwrap();
    m.end_of_message(&[], &mut out).unwrap();
    assert_eq!(m.awaiting(), Some(Stage::EndOfMessage));
    m
}

#[test]
fn malformed_and_unexpected_packets_are_errors() {
    let bad = |m: &mut Client, input: &[u8]| m.handle_input(input).unwrap_err();
    let mal = |command: u8, problem: Problem| Error::Malformed { command, problem };
    let all = Actions::ALL;
    assert_eq!(bad(&mut at_end(all), b"\0\0\0\0"), mal(0, Problem::ZeroLength));
    assert_eq!(bad(&mut at_end(all), b"\0\x02\0\0"), Error::Oversized { len: 0x20000, max: 66560 });
    assert_eq!(bad(&mut at_end(all), &p(b'h', b"X-A\0no nul")), mal(b'h', Problem::Truncated));
    assert_eq!(bad(&mut at_end(all), &p(b'h', b"X-A\0v\0more")), mal(b'h', Problem::TrailingData));
    assert_eq!(bad(&mut at_end(all), &p(b'h', b"X A\0v\0")), mal(b'h', Problem::HeaderName));
    assert_eq!(bad(&mut at_end(all), &p(b'h', b"X-A:\0v\0")), mal(b'h', Problem::HeaderName));
    assert_eq!(bad(&mut at_end(all), &p(b'h', b"\0v\0")), mal(b'h', Problem::HeaderName));
    // A value that would inject a field, or a bare CR.
    for v in [&b"v\r\nBcc: x@y\0"[..], b"v\nX: y\0", b"v\r\n\0", b"v\rw\0"] {
        let mut d = b"X-A\0".to_vec();
        d.extend_from_slice(v);
        assert_eq!(bad(&mut at_end(all), &p(b'h', &d)), mal(b'h', Problem::HeaderValue), "{v:?}");
    }
    assert_eq!(bad(&mut at_end(all), &p(b'i', b"\0\0\0")), mal(b'i', Problem::Truncated));
    assert_eq!(bad(&mut at_end(all), &p(b'+', b"\0")), mal(b'+', Problem::EmptyAddress));
    assert_eq!(bad(&mut at_end(all), &p(b'c', b"x")), mal(b'c', Problem::TrailingData));
    assert_eq!(
        bad(&mut at_end(all), &p(b'Z', b"")),
        Error::Unexpected { command: b'Z', stage: Some(Stage::EndOfMessage) }
    );
    assert_eq!(
        bad(&mut at_end(all), &p(b'O', b"")),
        Error::Unexpected { command: b'O', stage: Some(Stage::EndOfMessage) }
    );
    assert_eq!(
        bad(&mut at_end(all), &p(b's', b"")),
        Error::Unexpected { command: b's', stage: Some(Stage::EndOfMessage) }
    );
    // Skip when SKIP was not offered.
    let mut config = Config::new();
    config.protocol = Protocol::NONE;
    let mut m = Client::new(config);
    let mut out = [0u8; 256];
    m.negotiate(&mut out).unwrap();
    let _ = m.handle_input(&optneg(0, Protocol::SKIP.0, b"")).unwrap();
    m.connect(&[], b"h", Family::Unknown, &mut out).unwrap();
    let _ = m.handle_input(C).unwrap();
    m.mail(&[], "<a@b>", &[], &mut out).unwrap();
    let _ = m.handle_input(C).unwrap();
    m.rcpt(&[], "<c@d>", &[], &mut out).unwrap();
    let _ = m.handle_input(C).unwrap();
    assert!(m.body(3).unwrap().is_some());
    assert_eq!(bad(&mut m, &p(b's', b"")), Error::Unexpected { command: b's', stage: Some(Stage::Body) });
    // Modifications not negotiated.
    let only_add = Actions::ADD_HEADERS;
    assert_eq!(bad(&mut at_end(only_add), &p(b'm', b"\0\0\0\x01X\0v\0")), Error::NotNegotiated { command: b'm' });
    assert_eq!(bad(&mut at_end(only_add), &p(b'b', b"x")), Error::NotNegotiated { command: b'b' });
    assert_eq!(bad(&mut at_end(only_add), &p(b'q', b"r\0")), Error::NotNegotiated { command: b'q' });
    // A modification before the end of the message.
    let mut m = negotiated(Actions::ALL, Protocol::NONE);
    m.connect(&[], b"h", Family::Unknown, &mut [0u8; 64]).unwrap();
    assert_eq!(bad(&mut m, &p(b'h', b"X\0v\0")), Error::Unexpected { command: b'h', stage: Some(Stage::Connect) });
    // Bytes while nothing is awaited; the error sticks; only quit is left.
    let mut m = negotiated(Actions::ALL, Protocol::NONE);
    assert_eq!(bad(&mut m, C), Error::Unexpected { command: b'c', stage: None });
    assert_eq!(bad(&mut m, b""), Error::Unexpected { command: b'c', stage: None });
    let mut m2 = negotiated(Actions::ALL, Protocol::NONE);
    assert_eq!(m2.handle_input(b"\0\0\0\x01").unwrap().consumed, 0, "the command byte decides");
    assert_eq!(m.connect(&[], b"h", Family::Unknown, &mut [0u8; 64]), Err(ApiError::Closed));
    assert_eq!(m.quit(&mut [0u8; 8]), Ok(5));
    // The negotiation answer.
    let neg = |data: &[u8]| {
        let mut m = Client::new(Config::new());
        m.negotiate(&mut [0u8; 64]).unwrap();
        m.handle_input(&p(b'O', data)).map(|_| ())
    };
    assert_eq!(neg(b"\0\0\0\x06\0\0\0\0").unwrap_err(), mal(b'O', Problem::Truncated));
    assert_eq!(neg(b"\0\0\0\x07\0\0\0\0\0\0\0\0").unwrap_err(), Error::Version(7));
    assert_eq!(neg(b"\0\0\0\x01\0\0\0\0\0\0\0\0").unwrap_err(), Error::Version(1));
    assert_eq!(neg(b"\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\x09{j}\0").unwrap_err(), mal(b'O', Problem::MacroStage));
    assert_eq!(neg(b"\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\x01{j}").unwrap_err(), mal(b'O', Problem::Truncated));
    let mut m = Client::new(Config::new());
    m.negotiate(&mut [0u8; 64]).unwrap();
    assert_eq!(m.handle_input(C).unwrap_err(), Error::Unexpected { command: b'c', stage: Some(Stage::Negotiate) });
}

#[test]
fn errors_show_at_the_same_point_whatever_the_split() {
    for stream in [
        cat(&[optneg(0, 0, b""), b"\0\0\0\0".to_vec()]),
        // Found by the fuzzer: a zero length followed by more bytes.
        cat(&[optneg(0, 0, b""), C.to_vec(), b"\0\0\0\0\x06\0\0\x01".to_vec()]),
        cat(&[optneg(0, 0, b""), b"\x7f\0\0\0c".to_vec()]),
        cat(&[optneg(0, 0, b""), C.to_vec(), p(b'h', b"X\0v\0")]),
        cat(&[optneg(0, 0, b"\0\0\0\x07x\0")]),
        cat(&[optneg(0, 0, b""), C.to_vec(), C.to_vec()]), // then silence
    ] {
        let t = all_splits(&stream);
        let last = t.events.last().unwrap();
        assert!(last.starts_with("error: ") || last == "silent", "{:?}", t.events);
    }
}

#[test]
fn negotiation_masks_what_was_not_offered() {
    let mut config = Config::new();
    config.actions = Actions::ADD_HEADERS.with(Actions::CHANGE_HEADERS);
    config.protocol = Protocol::NO_BODY;
    let mut m = Client::new(config);
    let mut out = [0u8; 64];
    let n = m.negotiate(&mut out).unwrap();
    assert_eq!(&out[..n], b"\0\0\0\x0dO\0\0\0\x06\0\0\0\x11\0\0\0\x10");
    let macros = b"\0\0\0\x00{j} _\0\0\0\0\x05i\0";
    let input = optneg(Actions::ALL.0, Protocol::NO_BODY.with(Protocol::MAX_DATA_1M).with(Protocol::NO_HELO).0, macros);
    let Progress::Event(Event::Negotiated { options, macros }) = m.handle_input(&input).unwrap().progress else {
        panic!()
    };
    assert_eq!(options.actions, Actions::ADD_HEADERS.with(Actions::CHANGE_HEADERS));
    assert_eq!(options.refused_actions, Actions::ALL.without(options.actions));
    assert_eq!(options.protocol, Protocol::NO_BODY);
    assert_eq!(options.ignored_protocol, Protocol::MAX_DATA_1M.with(Protocol::NO_HELO));
    let lists: Vec<(Stage, &[u8])> = macros.iter().collect();
    assert_eq!(lists, [(Stage::Connect, &b"{j} _"[..]), (Stage::EndOfMessage, &b"i"[..])]);
    assert!(format!("{options:?}").contains("ADD_HEADERS|CHANGE_HEADERS"));
    // HELO is still sent (NO_HELO was not offered).
    m.connect(&[], b"h", Family::Unknown, &mut out).unwrap();
    let _ = m.handle_input(C).unwrap();
    assert!(m.helo(&[], "x", &mut out).unwrap() > 0);
}

#[test]
fn api_misuse() {
    let mut out = [0u8; 256];
    let mut m = Client::new(Config::new());
    assert_eq!(m.connect(&[], b"h", Family::Unknown, &mut out), Err(ApiError::OutOfOrder));
    assert_eq!(m.negotiate(&mut [0u8; 16]), Err(ApiError::BufferTooSmall { needed: 17 }));
    m.negotiate(&mut out).unwrap();
    assert_eq!(m.negotiate(&mut out), Err(ApiError::AwaitingReply));
    let _ = m.handle_input(&optneg(0, 0, b"")).unwrap();
    assert_eq!(m.mail(&[], "<a@b>", &[], &mut out), Err(ApiError::OutOfOrder));
    assert_eq!(m.connect(&[("j", "a\0b")], b"h", Family::Unknown, &mut out), Err(ApiError::Nul));
    assert_eq!(m.connect(&[], b"h\0", Family::Unknown, &mut out), Err(ApiError::Nul));
    let n = m.connect(&[], b"host", Family::Unix("/run/s"), &mut out).unwrap();
    assert_eq!(&out[..n], &p(b'C', b"host\0L\0\0/run/s\0")[..]);
    let _ = m.handle_input(C).unwrap();
    assert_eq!(m.rcpt(&[], "<a@b>", &[], &mut out), Err(ApiError::OutOfOrder));
    assert_eq!(m.body(1), Err(ApiError::OutOfOrder));
    m.mail(&[], "<>", &[], &mut out).unwrap();
    let _ = m.handle_input(C).unwrap();
    assert_eq!(m.data(&[], &mut out), Err(ApiError::OutOfOrder));
    m.rcpt(&[], "<a@b>", &[], &mut out).unwrap();
    let _ = m.handle_input(C).unwrap();
    assert_eq!(m.body(65_536), Err(ApiError::ChunkTooLarge));
    assert_eq!(m.body(65_535), Ok(Some([0, 1, 0, 0, b'B'])));
    let _ = m.handle_input(C).unwrap();
    assert_eq!(m.header(b"X", b"v", &mut out), Err(ApiError::OutOfOrder));
    // Abort: the next message may start.
    assert_eq!(m.abort(&mut out), Ok(5));
    assert_eq!(&out[..5], b"\0\0\0\x01A");
    let n = m.mail(&[], "<x@y>", &[], &mut out).unwrap();
    assert_eq!(&out[..n], &p(b'M', b"<x@y>\0")[..]);
    // IPv6.
    let mut m = negotiated(Actions::NONE, Protocol::NONE);
    let n = m.connect(&[], b"[::1]", Family::Inet("[::1]:25".parse().unwrap()), &mut out).unwrap();
    assert_eq!(&out[..n], &p(b'C', b"[::1]\x006\0\x19::1\0")[..]);
    // A connection refused at connect: only quit.
    let _ = m.handle_input(&p(b'r', b"")).unwrap();
    assert_eq!(m.helo(&[], "x", &mut out), Err(ApiError::OutOfOrder));
    assert_eq!(m.abort(&mut out), Err(ApiError::OutOfOrder));
    assert_eq!(m.quit(&mut out), Ok(5));
    assert!(m.is_closed());
}

#[test]
fn oversized_is_seen_from_the_length_alone() {
    let mut m = at_end(Actions::ALL);
    let mut config = Config::new();
    config.max_packet = 10;
    let _ = config;
    assert!(matches!(m.handle_input(b"\0\x01\x04\x01"), Err(Error::Oversized { len: 66561, .. })));
    // A body replacement chunk of the largest size libmilter sends is fine.
    let mut m = at_end(Actions::ALL);
    let big = p(b'b', &vec![b'x'; 65_535]);
    let r = m.handle_input(&big).unwrap();
    assert_eq!(r.consumed, big.len());
    assert!(
        matches!(r.progress, Progress::Event(Event::Modification(Modification::ReplaceBody(b))) if b.len() == 65_535)
    );
    // Partial packets consume nothing.
    let mut m = at_end(Actions::ALL);
    for k in 0..big.len().min(300) {
        assert_eq!(m.handle_input(&big[..k]).unwrap().consumed, 0);
    }
}
