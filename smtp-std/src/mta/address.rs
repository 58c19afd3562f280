//! RFC 5322 address lists (§3.4, with RFC 6532's UTF-8 and RFC 6854's groups in `From:`): the
//! mailboxes a `From:`, `Sender:`, `To:` or `Cc:` field names.
//!
//! [`parse_address_list`] takes a field's unfolded value and gives every mailbox in it, or an
//! error. It is strict where leniency would let an address hide: whatever is not a mailbox
//! (an unbalanced comment, quote, bracket or angle, two addresses without a comma, text after
//! `>`) is an error, never skipped. What it reads:
//!
//! - `addr-spec`: `local@domain`, the local part a dot-atom or a quoted string (escapes
//!   undone), the domain a dot-atom or a domain literal (`[192.0.2.1]`);
//! - `name-addr`: a display name (atoms, quoted strings; RFC 2047 encoded words are atoms
//!   like any other) and `<addr-spec>`;
//! - groups: `name: a@b.test, c@d.test;` (their members are mailboxes; `name:;` has none);
//! - comments (nested, with quoted pairs) wherever white space may be: they are dropped and
//!   never read as addresses, so `bob@a.test (<alice@a.test>)` is bob's address;
//! - the obsolete forms that cost nothing: empty list elements (`a@b.test,,c@d.test`), white
//!   space and comments around the dots of a local part or a domain, a display name with dots
//!   (`J. Smith`). An obsolete source route (`<@relay:a@b.test>`) is an error.
//!
//! Nothing is recursive (a comment's nesting is a counter), the work is linear in the input,
//! and no input makes it panic.
//!
//! ```
//! use smtp_std::mta::address::parse_address_list;
//!
//! let list = parse_address_list(r#""Smith, Bob" <bob@Example.ORG>, team: alice@a.test (Alice);"#).unwrap();
//! let addresses: Vec<String> = list.iter().map(|m| m.addr_spec()).collect();
//! assert_eq!(addresses, ["bob@example.org", "alice@a.test"]);
//! assert_eq!(list[0].display_name.as_deref(), Some("Smith, Bob"));
//!
//! // A comment is not an address; two addresses need a comma.
//! let list = parse_address_list("bob@a.test (<alice@a.test>)").unwrap();
//! assert_eq!(list[0].addr_spec(), "bob@a.test");
//! assert!(parse_address_list("alice@a.test bob@a.test").is_err());
//! ```

use std::fmt;

/// One mailbox of an address list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name, if any: its words joined by one space, quoted strings unquoted.
    pub display_name: Option<String>,
    /// The local part, unquoted (`"alice"` and `alice` are both `alice`), its words joined by
    /// dots; case kept.
    pub local_part: String,
    /// The domain in ASCII lower case; a domain literal keeps its brackets (`[192.0.2.1]`).
    pub domain: String,
}

impl Mailbox {
    /// The address `local@domain`, the local part quoted again only where it is not a
    /// dot-atom (`"a b"@example.org`).
    pub fn addr_spec(&self) -> String {
        if is_dot_atom(&self.local_part) {
            format!("{}@{}", self.local_part, self.domain)
        } else {
            let quoted = self.local_part.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{quoted}\"@{}", self.domain)
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr_spec())
    }
}

/// Why a value is not an address list, and where (a byte offset into the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    /// What is wrong.
    pub reason: &'static str,
    /// The byte offset in the value where it was found.
    pub offset: usize,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.reason, self.offset)
    }
}

impl std::error::Error for AddressError {}

/// Every mailbox of the address list `value` (a field's value, unfolded or with `CRLF` + white
/// space folds), in order, group members included; an empty list (only white space and
/// comments, or empty groups) gives none. See the module notes for what is read.
pub fn parse_address_list(value: &str) -> Result<Vec<Mailbox>, AddressError> {
    let tokens = tokenize(value)?;
    let mut p = Parser { tokens, pos: 0, end: value.len() };
    let mut out = Vec::new();
    loop {
        while p.eat(b',') {}
        if p.at_end() {
            return Ok(out);
        }
        p.address(&mut out, false)?;
        if !p.at_end() && !p.eat(b',') {
            return Err(p.error("expected ',' between addresses"));
        }
    }
}

/// A lexical token; comments and white space are gone.
#[derive(Debug)]
enum Tok<'a> {
    /// `1*atext` (RFC 6532: any non-ASCII character too).
    Atom(&'a str),
    /// A quoted string, unquoted.
    Quoted(String),
    /// A domain literal with its brackets, white space dropped (quoted pairs kept where needed).
    Literal(String),
    /// One of `< > : ; @ , .`.
    Special(u8),
}

#[derive(Debug)]
struct Token<'a> {
    tok: Tok<'a>,
    at: usize,
}

fn err(reason: &'static str, offset: usize) -> AddressError {
    AddressError { reason, offset }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|a| !a.is_empty() && a.chars().all(is_atext))
}

/// A character no text of an address may hold: controls other than tab, and DEL.
fn is_forbidden(c: char) -> bool {
    (c.is_ascii_control() && c != '\t') || c == '\u{7f}'
}

/// Reads the value into tokens, dropping white space, folds and comments.
fn tokenize(s: &str) -> Result<Vec<Token<'_>>, AddressError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b[i] {
            b' ' | b'\t' => i += 1,
            b'\r' | b'\n' => i = fold(b, i)?,
            b'(' => i = skip_comment(s, i)?,
            b'"' => {
                let (text, next) = quoted_string(s, i)?;
                out.push(Token { tok: Tok::Quoted(text), at: start });
                i = next;
            }
            b'[' => {
                let (text, next) = domain_literal(s, i)?;
                out.push(Token { tok: Tok::Literal(text), at: start });
                i = next;
            }
            c @ (b'<' | b'>' | b':' | b';' | b'@' | b',' | b'.') => {
                out.push(Token { tok: Tok::Special(c), at: start });
                i += 1;
            }
            b')' => return Err(err("')' without '('", i)),
            b']' => return Err(err("']' without '['", i)),
            b'\\' => return Err(err("'\\' outside a quoted string or comment", i)),
            _ => {
                let len: usize = s[i..].chars().take_while(|&c| is_atext(c)).map(char::len_utf8).sum();
                if len == 0 {
                    return Err(err("character not allowed in an address", i));
                }
                out.push(Token { tok: Tok::Atom(&s[i..i + len]), at: start });
                i += len;
            }
        }
    }
    Ok(out)
}

/// A fold at `i` (`CRLF` or a lone `LF` followed by a space or tab): the index after the line
/// end. Any other line break is an error.
fn fold(b: &[u8], i: usize) -> Result<usize, AddressError> {
    let after = match (b[i], b.get(i + 1)) {
        (b'\r', Some(b'\n')) => i + 2,
        (b'\n', _) => i + 1,
        _ => return Err(err("bare CR", i)),
    };
    match b.get(after) {
        Some(b' ' | b'\t') => Ok(after),
        _ => Err(err("line break not followed by white space", i)),
    }
}

/// Skips the comment that starts at `start` (`(`): the index after its `)`. Nesting is
/// counted, not recursed into.
fn skip_comment(s: &str, start: usize) -> Result<usize, AddressError> {
    let b = s.as_bytes();
    let mut depth: usize = 0;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            b'\\' => {
                i = quoted_pair(s, i)?.1;
                continue;
            }
            b'\r' | b'\n' => {
                i = fold(b, i)?;
                continue;
            }
            c if is_forbidden(c as char) => return Err(err("control character in a comment", i)),
            _ => {}
        }
        i += 1;
    }
    Err(err("comment not closed", start))
}

/// The quoted pair at `i` (`\` and one character): that character and the index after it.
fn quoted_pair(s: &str, i: usize) -> Result<(char, usize), AddressError> {
    match s[i + 1..].chars().next() {
        Some(c) if !is_forbidden(c) && c != '\r' && c != '\n' => Ok((c, i + 1 + c.len_utf8())),
        Some(_) => Err(err("control character after '\\'", i)),
        None => Err(err("'\\' at the end", i)),
    }
}

/// The quoted string starting at `start` (`"`), unquoted, and the index after it.
fn quoted_string(s: &str, start: usize) -> Result<(String, usize), AddressError> {
    let b = s.as_bytes();
    let mut text = String::new();
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Ok((text, i + 1)),
            b'\\' => {
                let (c, next) = quoted_pair(s, i)?;
                text.push(c);
                i = next;
            }
            b'\r' | b'\n' => i = fold(b, i)?,
            _ => {
                let c = s[i..].chars().next().unwrap_or('\0');
                if is_forbidden(c) {
                    return Err(err("control character in a quoted string", i));
                }
                text.push(c);
                i += c.len_utf8();
            }
        }
    }
    Err(err("quoted string not closed", start))
}

/// The domain literal starting at `start` (`[`) with its brackets and without white space
/// (a quoted `[`, `]`, `\` or white space stays quoted), and the index after it.
fn domain_literal(s: &str, start: usize) -> Result<(String, usize), AddressError> {
    let b = s.as_bytes();
    let mut text = String::from("[");
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b']' => {
                text.push(']');
                return Ok((text, i + 1));
            }
            b'[' => return Err(err("'[' inside a domain literal", i)),
            b'\\' => {
                // Kept escaped where it must be, so that the literal reads back the same.
                let (c, next) = quoted_pair(s, i)?;
                if matches!(c, '[' | ']' | '\\' | ' ' | '\t') {
                    text.push('\\');
                }
                text.push(c);
                i = next;
            }
            b' ' | b'\t' => i += 1,
            b'\r' | b'\n' => i = fold(b, i)?,
            _ => {
                let c = s[i..].chars().next().unwrap_or('\0');
                if is_forbidden(c) {
                    return Err(err("control character in a domain literal", i));
                }
                text.push(c);
                i += c.len_utf8();
            }
        }
    }
    Err(err("domain literal not closed", start))
}

/// The parser over the tokens.
struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    /// The length of the value: the offset of errors at its end.
    end: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    fn peek(&self) -> Option<&Tok<'_>> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn is(&self, special: u8) -> bool {
        matches!(self.peek(), Some(Tok::Special(c)) if *c == special)
    }

    fn eat(&mut self, special: u8) -> bool {
        let found = self.is(special);
        if found {
            self.pos += 1;
        }
        found
    }

    /// An error at the current token (or the end).
    fn error(&self, reason: &'static str) -> AddressError {
        err(reason, self.tokens.get(self.pos).map_or(self.end, |t| t.at))
    }

    /// A word (atom or quoted string) as text, consumed; `None` (nothing consumed) otherwise.
    fn word(&mut self) -> Option<String> {
        let w = match self.peek()? {
            Tok::Atom(a) => (*a).to_owned(),
            Tok::Quoted(q) => q.clone(),
            _ => return None,
        };
        self.pos += 1;
        Some(w)
    }

    /// One address (a mailbox, or a group unless `in_group`): its mailboxes into `out`.
    fn address(&mut self, out: &mut Vec<Mailbox>, in_group: bool) -> Result<(), AddressError> {
        let start = self.pos;
        // A phrase (display name) or the local part of an addr-spec: words and dots.
        let mut name = String::new();
        if let Some(first) = self.word() {
            name.push_str(&first);
            loop {
                if let Some(w) = self.word() {
                    name.push(' ');
                    name.push_str(&w);
                } else if self.eat(b'.') {
                    name.push('.');
                } else {
                    break;
                }
            }
        }
        match self.peek() {
            Some(Tok::Special(b'@')) => {
                self.pos = start;
                let mut m = self.addr_spec()?;
                m.display_name = None;
                out.push(m);
                Ok(())
            }
            Some(Tok::Special(b'<')) => {
                self.pos += 1;
                if self.is(b'@') {
                    return Err(self.error("obsolete source route in '<...>' not accepted"));
                }
                let mut m = self.addr_spec()?;
                if !self.eat(b'>') {
                    return Err(self.error("expected '>'"));
                }
                m.display_name = (!name.is_empty()).then_some(name);
                out.push(m);
                Ok(())
            }
            Some(Tok::Special(b':')) if in_group => Err(self.error("group inside a group")),
            Some(Tok::Special(b':')) if name.is_empty() => Err(self.error("group without a display name")),
            Some(Tok::Special(b':')) => {
                self.pos += 1;
                self.group_list(out)
            }
            _ if name.is_empty() => Err(self.error("expected an address")),
            _ => Err(self.error("no '@' in the address")),
        }
    }

    /// The members of a group after its `:`, up to and with its `;`.
    fn group_list(&mut self, out: &mut Vec<Mailbox>) -> Result<(), AddressError> {
        loop {
            if self.eat(b';') {
                return Ok(());
            }
            if self.at_end() {
                return Err(self.error("group not closed with ';'"));
            }
            if self.eat(b',') {
                continue;
            }
            self.address(out, true)?;
            if !self.is(b';') && !self.eat(b',') {
                return Err(self.error("expected ',' or ';' after a group member"));
            }
        }
    }

    /// `local-part "@" domain`.
    fn addr_spec(&mut self) -> Result<Mailbox, AddressError> {
        let mut local = self.word().ok_or_else(|| self.error("expected a local part"))?;
        while self.eat(b'.') {
            let w = self.word().ok_or_else(|| self.error("expected a word after '.' in the local part"))?;
            local.push('.');
            local.push_str(&w);
        }
        if !self.eat(b'@') {
            return Err(self.error("expected '@'"));
        }
        let domain = match self.peek() {
            Some(Tok::Literal(l)) => {
                let l = l.clone();
                self.pos += 1;
                l
            }
            Some(Tok::Atom(a)) => {
                let mut d = (*a).to_owned();
                self.pos += 1;
                while self.eat(b'.') {
                    match self.peek() {
                        Some(Tok::Atom(a)) => {
                            d.push('.');
                            d.push_str(a);
                            self.pos += 1;
                        }
                        _ => return Err(self.error("expected a label after '.' in the domain")),
                    }
                }
                d
            }
            _ => return Err(self.error("expected a domain")),
        };
        Ok(Mailbox { display_name: None, local_part: local, domain: domain.to_ascii_lowercase() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(v: &str) -> Vec<String> {
        match parse_address_list(v) {
            Ok(list) => list.iter().map(Mailbox::addr_spec).collect(),
            Err(e) => panic!("{v:?}: {e}"),
        }
    }

    fn fails(v: &str) -> AddressError {
        match parse_address_list(v) {
            Ok(list) => panic!("{v:?} parsed as {list:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn addr_spec_forms() {
        assert_eq!(addrs("alice@a.test"), ["alice@a.test"]);
        assert_eq!(addrs("  Alice.Smith+tag@A.Test  "), ["Alice.Smith+tag@a.test"]);
        assert_eq!(addrs("\"alice\"@a.test"), ["alice@a.test"]);
        assert_eq!(addrs("\"a b\"@a.test"), ["\"a b\"@a.test"]);
        assert_eq!(addrs(r#""a\"b\\c"@a.test"#), [r#""a\"b\\c"@a.test"#]);
        assert_eq!(addrs("\"\"@a.test"), ["\"\"@a.test"]);
        assert_eq!(addrs("alice@[192.0.2.1]"), ["alice@[192.0.2.1]"]);
        assert_eq!(addrs("alice@[ IPv6:2001:db8::1 ]"), ["alice@[ipv6:2001:db8::1]"]);
        assert_eq!(addrs(r"a@[\]\x\ y]"), [r"a@[\]x\ y]"]);
        assert_eq!(addrs(r"a@[\]x\ y]"), [r"a@[\]x\ y]"]);
        assert_eq!(addrs("jörg@bücher.test"), ["jörg@bücher.test"]);
        // Obsolete: CFWS around the dots, quoted words in a dotted local part.
        assert_eq!(addrs("alice . smith (x) @ a (y) . test"), ["alice.smith@a.test"]);
        assert_eq!(addrs("\"al\".\"ice\"@a.test"), ["al.ice@a.test"]);
        let m = &parse_address_list("\"x\"@a.test").unwrap()[0];
        assert_eq!((m.local_part.as_str(), m.domain.as_str(), m.display_name.as_deref()), ("x", "a.test", None));
    }

    #[test]
    fn name_addr_forms() {
        let l = parse_address_list("Alice <alice@a.test>").unwrap();
        assert_eq!(l[0].display_name.as_deref(), Some("Alice"));
        assert_eq!(l[0].addr_spec(), "alice@a.test");
        let l = parse_address_list(r#""Smith, \"Bob\"" <bob@b.test>"#).unwrap();
        assert_eq!(l[0].display_name.as_deref(), Some("Smith, \"Bob\""));
        let l = parse_address_list("J. R. Smith <j@b.test>").unwrap();
        assert_eq!(l[0].display_name.as_deref(), Some("J. R. Smith"));
        let l = parse_address_list("=?utf-8?q?Al=C3=AFce?= <alice@a.test>").unwrap();
        assert_eq!(l[0].display_name.as_deref(), Some("=?utf-8?q?Al=C3=AFce?="));
        assert_eq!(addrs("<alice@a.test>"), ["alice@a.test"]);
        assert_eq!(addrs(" < alice @ a.test > "), ["alice@a.test"]);
        // A display name that looks like an address is only a name.
        assert_eq!(addrs("\"bob@b.test\" <alice@a.test>"), ["alice@a.test"]);
        assert_eq!(addrs("\"alice@a.test\" <bob@b.test>"), ["bob@b.test"]);
        // Folded.
        assert_eq!(addrs("Alice\r\n <alice@a.test>,\r\n\tbob@b.test"), ["alice@a.test", "bob@b.test"]);
        assert_eq!(addrs("Alice\n <alice@a.test>"), ["alice@a.test"]);
    }

    #[test]
    fn comments_are_not_addresses() {
        assert_eq!(addrs("bob@a.test (<alice@a.test>)"), ["bob@a.test"]);
        assert_eq!(addrs("(alice@a.test) bob@a.test"), ["bob@a.test"]);
        assert_eq!(addrs("bob(alice@a.test)@a.test"), ["bob@a.test"]);
        assert_eq!(addrs("Bob (x (y) <alice@a.test>) <bob@a.test>"), ["bob@a.test"]);
        assert_eq!(addrs(r"bob@a.test (a \) <alice@a.test> \( b)"), ["bob@a.test"]);
        assert_eq!(addrs("bob@a.test ((((deep))))"), ["bob@a.test"]);
        assert_eq!(addrs("(only a comment)"), Vec::<String>::new());
        // A '(' in a quoted string opens no comment, a '"' in a comment opens no string.
        assert_eq!(addrs("\"(\" <bob@a.test>, alice@a.test"), ["bob@a.test", "alice@a.test"]);
        assert_eq!(addrs("(\") bob@a.test"), ["bob@a.test"]);
    }

    #[test]
    fn lists_and_groups() {
        assert_eq!(addrs("bob@a.test, <alice@a.test>"), ["bob@a.test", "alice@a.test"]);
        assert_eq!(addrs("a@x.test,b@x.test , C <c@x.test>"), ["a@x.test", "b@x.test", "c@x.test"]);
        assert_eq!(addrs(",a@x.test,,b@x.test,"), ["a@x.test", "b@x.test"]);
        assert_eq!(addrs(""), Vec::<String>::new());
        assert_eq!(addrs("team: alice@a.test, Bob <bob@a.test>;"), ["alice@a.test", "bob@a.test"]);
        assert_eq!(addrs("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(addrs("g: (c) ;, x@y.test"), ["x@y.test"]);
        assert_eq!(addrs("\"A team\": a@x.test,,;"), ["a@x.test"]);
        assert_eq!(addrs("g1: a@x.test;, g2: b@x.test;, c@x.test"), ["a@x.test", "b@x.test", "c@x.test"]);
    }

    #[test]
    fn unparseable() {
        for v in [
            "alice@a.test bob@a.test",
            "alice@a.test <bob@a.test>",
            "<alice@a.test> bob@a.test",
            "Alice",
            "alice",
            "@a.test",
            "alice@",
            "alice@a.test.",
            "alice@.a.test",
            "alice..x@a.test",
            ".alice@a.test",
            "alice.@a.test",
            "<alice@a.test",
            "alice@a.test>",
            "<<alice@a.test>>",
            "<>",
            "<@relay.test:alice@a.test>",
            "alice@\"a.test\"",
            "alice@a.test;",
            ": a@x.test;",
            "g: a@x.test",
            "g: a@x.test b@x.test;",
            "g: h: a@x.test;;",
            "g1: a@x.test; g2: b@x.test;",
            "alice@a.test (comment",
            "alice@a.test comment)",
            "\"alice@a.test",
            "alice@[192.0.2.1",
            "alice@192.0.2.1]",
            "alice@[a[b]",
            "al\\ice@a.test",
            "alice@a.test\r\nbob@b.test",
            "alice@a.test\rbob",
            "alice\0@a.test",
            "\"a\0\"@a.test",
            "(\0) a@x.test",
            "\"\\",
            "(\\",
            "a@x.test, \u{7f}",
        ] {
            fails(v);
        }
        assert_eq!(
            fails("alice@a.test bob@a.test"),
            AddressError { reason: "expected ',' between addresses", offset: 13 }
        );
        assert_eq!(fails("x@y.test (a (b)").reason, "comment not closed");
        assert_eq!(fails("x@y.test (a (b)").offset, 9);
    }

    #[test]
    fn hostile_sizes_do_not_overflow_or_panic() {
        // Deep nesting is a counter, not recursion.
        let deep = format!("bob@a.test {}{}", "(".repeat(1 << 20), ")".repeat(1 << 20));
        assert_eq!(addrs(&deep), ["bob@a.test"]);
        let unbalanced = format!("bob@a.test {}", "(".repeat(1 << 20));
        assert_eq!(fails(&unbalanced).reason, "comment not closed");
        // Long inputs: many mailboxes, long words, many separators.
        let many = vec!["a@x.test"; 20_000].join(", ");
        assert_eq!(parse_address_list(&many).unwrap().len(), 20_000);
        let long = format!("{}@x.test", "a".repeat(1 << 20));
        assert_eq!(parse_address_list(&long).unwrap()[0].local_part.len(), 1 << 20);
        assert!(parse_address_list(&",".repeat(1 << 20)).unwrap().is_empty());
        fails(&"<".repeat(1 << 16));
        fails(&"\"".repeat((1 << 16) + 1));
        fails(&"@".repeat(1 << 16));
        fails(&".".repeat(1 << 16));
        fails(&"g:".repeat(1 << 16));
        // Every prefix of a tricky value: an answer, never a panic (multi-byte characters
        // are cut at char boundaries only, as &str requires).
        let tricky = "\"Ä, \\\"x\" (c (ö) \\)) <ä.b@[1.2\\]>, g: \"q\"@x.test (z);, =?a?b?c?= <d@e.test>";
        for (i, _) in tricky.char_indices() {
            let _ = parse_address_list(&tricky[..i]);
        }
    }

    #[test]
    fn random_values_never_panic_and_addresses_round_trip() {
        // Values made of the characters that matter, from a fixed pseudo-random sequence.
        let alphabet: Vec<char> = "ab.@<>,;:()\"\\[] \t\r\nä\0".chars().collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut parsed = 0;
        for _ in 0..50_000 {
            let mut v = String::new();
            for _ in 0..(x % 24) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let Ok(list) = parse_address_list(&v) else { continue };
            parsed += 1;
            // Every mailbox found reads back as itself from its addr-spec.
            for m in list {
                let again = parse_address_list(&m.addr_spec()).unwrap_or_else(|e| panic!("{v:?} {m:?}: {e}"));
                assert_eq!((again.len(), &again[0].local_part, &again[0].domain), (1, &m.local_part, &m.domain));
            }
        }
        assert!(parsed > 100, "{parsed}");
    }
}
