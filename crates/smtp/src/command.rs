//! SMTP commands (RFC 5321 §4.1) with the parameters of SIZE (RFC 1870),
//! 8BITMIME/BINARYMIME (RFC 6152, RFC 3030), DSN (RFC 3461) and SMTPUTF8
//! (RFC 6531): rendered by the client, parsed by the server.

use skein_mail::{BodyType, Notify, Ret, xtext};

use crate::error::{CommandError, show};

/// The longest command line [`Command::parse`] accepts, CRLF included:
/// RFC 5321's 512 plus room for the parameters of the extensions above
/// (RFC 1869 allows extensions to lengthen MAIL and RCPT).
pub const MAX_COMMAND_LINE: usize = 2048;

/// One SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`.
    Ehlo {
        /// The client's name (a domain or an address literal).
        domain: String,
    },
    /// `HELO domain`.
    Helo {
        /// The client's name.
        domain: String,
    },
    /// `MAIL FROM:<reverse-path> params`.
    Mail {
        /// The sender; `""` is the null reverse-path `<>`.
        reverse_path: String,
        /// The ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path> params`.
    Rcpt {
        /// The recipient.
        forward_path: String,
        /// The ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030); `size` bytes of content follow.
    Bdat {
        /// The chunk's length in bytes.
        size: u64,
        /// Whether it is the message's last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `STARTTLS` (RFC 3207).
    StartTls,
}

/// The parameters of `MAIL FROM`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n`: the message's size in bytes.
    pub size: Option<u64>,
    /// `BODY=7BIT|8BITMIME|BINARYMIME`.
    pub body: Option<BodyType>,
    /// `RET=FULL|HDRS`.
    pub ret: Option<Ret>,
    /// `ENVID=xtext`, decoded.
    pub envid: Option<String>,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `AUTH=xtext` (RFC 4954 §5), decoded: the mailbox that submitted the
    /// message, or `<>` when the client does not know it.
    pub auth: Option<String>,
}

/// The parameters of `RCPT TO`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=NEVER|SUCCESS,FAILURE,DELAY`.
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext`.
    pub orcpt: Option<Orcpt>,
}

/// A DSN original recipient (RFC 3461 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt {
    /// The address type, usually `rfc822`.
    pub addr_type: String,
    /// The address, decoded from xtext.
    pub addr: String,
}

impl Orcpt {
    /// Parses the parameter value `addr-type;xtext` (as the spool stores
    /// it). `None` when it has no `;`, an empty or non-atom type, or bad
    /// xtext or non-UTF-8 bytes in the address.
    pub fn parse(value: &str) -> Option<Orcpt> {
        let (addr_type, coded) = value.split_once(';')?;
        let atom_ok = !addr_type.is_empty()
            && addr_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !atom_ok {
            return None;
        }
        let addr = String::from_utf8(xtext::decode(coded.as_bytes())?).ok()?;
        Some(Orcpt {
            addr_type: addr_type.to_owned(),
            addr,
        })
    }

    /// `addr-type;xtext`.
    pub fn to_param(&self) -> String {
        format!("{};{}", self.addr_type, xtext::encode(self.addr.as_bytes()))
    }
}

impl Command {
    /// Appends the command line, CRLF included. Fails, writing nothing,
    /// when a domain or path contains bytes that would break the line
    /// (control characters, or `<`/`>` in a path, or a space in a domain).
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), CommandError> {
        let line = match self {
            Command::Ehlo { domain } => format!("EHLO {}", checked_domain(domain)?),
            Command::Helo { domain } => format!("HELO {}", checked_domain(domain)?),
            Command::Mail {
                reverse_path,
                params,
            } => {
                let mut line = format!("MAIL FROM:<{}>", checked_path(reverse_path)?);
                if let Some(size) = params.size {
                    line.push_str(&format!(" SIZE={size}"));
                }
                if let Some(body) = params.body {
                    line.push_str(&format!(" BODY={body}"));
                }
                if let Some(ret) = params.ret {
                    line.push_str(&format!(" RET={ret}"));
                }
                if let Some(envid) = &params.envid {
                    line.push_str(" ENVID=");
                    line.push_str(&xtext::encode(envid.as_bytes()));
                }
                if params.smtputf8 {
                    line.push_str(" SMTPUTF8");
                }
                if let Some(auth) = &params.auth {
                    line.push_str(" AUTH=");
                    line.push_str(&xtext::encode(auth.as_bytes()));
                }
                line
            }
            Command::Rcpt {
                forward_path,
                params,
            } => {
                let mut line = format!("RCPT TO:<{}>", checked_path(forward_path)?);
                if let Some(notify) = params.notify {
                    line.push_str(&format!(" NOTIFY={notify}"));
                }
                if let Some(orcpt) = &params.orcpt {
                    let ok = !orcpt.addr_type.is_empty()
                        && orcpt
                            .addr_type
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
                    if !ok {
                        return Err(CommandError::Unrenderable(format!(
                            "ORCPT address type {:?}",
                            orcpt.addr_type
                        )));
                    }
                    line.push_str(" ORCPT=");
                    line.push_str(&orcpt.to_param());
                }
                line
            }
            Command::Data => "DATA".to_owned(),
            Command::Bdat { size, last: true } => format!("BDAT {size} LAST"),
            Command::Bdat { size, last: false } => format!("BDAT {size}"),
            Command::Rset => "RSET".to_owned(),
            Command::Noop => "NOOP".to_owned(),
            Command::Quit => "QUIT".to_owned(),
            Command::StartTls => "STARTTLS".to_owned(),
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// [`write_to`](Self::write_to) into a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CommandError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Parses one command line (with or without its CRLF). Verbs and
    /// parameter keywords are case-insensitive; a space after `FROM:` /
    /// `TO:` is tolerated, as most servers do.
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        if line.len() > MAX_COMMAND_LINE {
            return Err(CommandError::LineTooLong {
                limit: MAX_COMMAND_LINE,
            });
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(CommandError::Syntax(format!(
                "control character in {}",
                show(line)
            )));
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| CommandError::Syntax(format!("not UTF-8: {}", show(line))))?;
        let (verb, rest) = match line.find(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, ""),
        };
        let upper = verb.to_ascii_uppercase();
        let no_args = |cmd: Command| {
            if rest.trim().is_empty() {
                Ok(cmd)
            } else {
                Err(CommandError::Syntax(format!("{upper} takes no argument")))
            }
        };
        match upper.as_str() {
            "EHLO" | "HELO" => {
                let domain = rest.trim();
                if domain.is_empty() || domain.contains(' ') {
                    return Err(CommandError::Syntax(format!("{upper} needs one domain")));
                }
                let domain = domain.to_owned();
                Ok(if upper == "EHLO" {
                    Command::Ehlo { domain }
                } else {
                    Command::Helo { domain }
                })
            }
            "MAIL" => {
                let (path, params) = split_path(rest, "FROM:")?;
                Ok(Command::Mail {
                    reverse_path: path,
                    params: parse_mail_params(params)?,
                })
            }
            "RCPT" => {
                let (path, params) = split_path(rest, "TO:")?;
                if path.is_empty() {
                    return Err(CommandError::Syntax("empty forward-path".into()));
                }
                Ok(Command::Rcpt {
                    forward_path: path,
                    params: parse_rcpt_params(params)?,
                })
            }
            "DATA" => no_args(Command::Data),
            "BDAT" => {
                let mut words = rest.split(' ').filter(|w| !w.is_empty());
                let size = words
                    .next()
                    .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| CommandError::Syntax("BDAT needs a size".into()))?;
                let last = match words.next() {
                    None => false,
                    Some(w) if w.eq_ignore_ascii_case("LAST") => true,
                    Some(w) => return Err(CommandError::Syntax(format!("BDAT {size} {w}"))),
                };
                if words.next().is_some() {
                    return Err(CommandError::Syntax("BDAT: too many arguments".into()));
                }
                Ok(Command::Bdat { size, last })
            }
            "RSET" => no_args(Command::Rset),
            // NOOP may carry a string, which is ignored (RFC 5321 §4.1.1.9).
            "NOOP" => Ok(Command::Noop),
            "QUIT" => no_args(Command::Quit),
            "STARTTLS" => no_args(Command::StartTls),
            _ => Err(CommandError::UnknownCommand(show(verb.as_bytes()))),
        }
    }
}

fn checked_domain(domain: &str) -> Result<&str, CommandError> {
    if domain.is_empty() || domain.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(CommandError::Unrenderable(format!("domain {domain:?}")));
    }
    Ok(domain)
}

fn checked_path(path: &str) -> Result<&str, CommandError> {
    if path
        .bytes()
        .any(|b| b < b' ' || b == 0x7f || b == b'<' || b == b'>')
    {
        return Err(CommandError::Unrenderable(format!("path {path:?}")));
    }
    Ok(path)
}

/// Splits `FROM:<path> params` into the path (without brackets) and the
/// parameter text.
fn split_path<'a>(rest: &'a str, keyword: &str) -> Result<(String, &'a str), CommandError> {
    let head = rest.get(..keyword.len()).unwrap_or("");
    if !head.eq_ignore_ascii_case(keyword) {
        return Err(CommandError::Syntax(format!("expected {keyword}")));
    }
    let after = rest[keyword.len()..].trim_start_matches(' ');
    let Some(inner) = after.strip_prefix('<') else {
        return Err(CommandError::Syntax(
            "path must be in angle brackets".into(),
        ));
    };
    // The first '>' outside a quoted string ends the path.
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == '>' && !quoted {
            let path = &inner[..i];
            if path.contains('<') {
                return Err(CommandError::Syntax("'<' inside a path".into()));
            }
            let params = &inner[i + 1..];
            if !params.is_empty() && !params.starts_with(' ') {
                return Err(CommandError::Syntax("text after the path".into()));
            }
            return Ok((path.to_owned(), params));
        }
    }
    Err(CommandError::Syntax("unterminated path".into()))
}

/// `KEYWORD[=value]` words.
fn params(text: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    text.split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (w.to_ascii_uppercase(), None),
        })
}

fn parse_mail_params(text: &str) -> Result<MailParams, CommandError> {
    let mut p = MailParams::default();
    for (key, value) in params(text) {
        let bad = || CommandError::BadParameter(format!("{key}={}", value.unwrap_or("")));
        let dup = match (key.as_str(), value) {
            ("SIZE", Some(v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                p.size.replace(v.parse().map_err(|_| bad())?).is_some()
            }
            ("BODY", Some(v)) => {
                let body = BodyType::from_keyword(v).ok_or_else(bad)?;
                p.body.replace(body).is_some()
            }
            ("RET", Some(v)) => {
                let ret = Ret::from_keyword(v).ok_or_else(bad)?;
                p.ret.replace(ret).is_some()
            }
            ("ENVID", Some(v)) => {
                let raw = xtext::decode(v.as_bytes()).ok_or_else(bad)?;
                let envid = String::from_utf8(raw).map_err(|_| bad())?;
                p.envid.replace(envid).is_some()
            }
            ("SMTPUTF8", None) => std::mem::replace(&mut p.smtputf8, true),
            ("AUTH", Some(v)) if !v.is_empty() => {
                let raw = xtext::decode(v.as_bytes()).ok_or_else(bad)?;
                let mailbox = String::from_utf8(raw).map_err(|_| bad())?;
                if mailbox.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                    return Err(bad());
                }
                p.auth.replace(mailbox).is_some()
            }
            ("SIZE" | "BODY" | "RET" | "ENVID" | "SMTPUTF8" | "AUTH", _) => return Err(bad()),
            _ => return Err(CommandError::UnknownParameter(key)),
        };
        if dup {
            return Err(CommandError::BadParameter(format!("{key} given twice")));
        }
    }
    Ok(p)
}

fn parse_rcpt_params(text: &str) -> Result<RcptParams, CommandError> {
    let mut p = RcptParams::default();
    for (key, value) in params(text) {
        let bad = || CommandError::BadParameter(format!("{key}={}", value.unwrap_or("")));
        let dup = match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => p.notify.replace(v.parse().map_err(|_| bad())?).is_some(),
            ("ORCPT", Some(v)) => p.orcpt.replace(Orcpt::parse(v).ok_or_else(bad)?).is_some(),
            ("NOTIFY" | "ORCPT", None) => return Err(bad()),
            _ => return Err(CommandError::UnknownParameter(key)),
        };
        if dup {
            return Err(CommandError::BadParameter(format!("{key} given twice")));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify(s: bool, f: bool, d: bool) -> Notify {
        Notify {
            never: false,
            success: s,
            failure: f,
            delay: d,
        }
    }

    fn mail(path: &str, params: MailParams) -> Command {
        Command::Mail {
            reverse_path: path.into(),
            params,
        }
    }

    fn rcpt(path: &str, params: RcptParams) -> Command {
        Command::Rcpt {
            forward_path: path.into(),
            params,
        }
    }

    /// Commands and their exact rendering; each must also parse back.
    fn table() -> Vec<(Command, &'static str)> {
        vec![
            (
                Command::Ehlo {
                    domain: "client.example".into(),
                },
                "EHLO client.example\r\n",
            ),
            (
                Command::Helo {
                    domain: "[192.0.2.1]".into(),
                },
                "HELO [192.0.2.1]\r\n",
            ),
            (mail("", MailParams::default()), "MAIL FROM:<>\r\n"),
            (
                mail(
                    "a@b.example",
                    MailParams {
                        size: Some(1234),
                        body: Some(BodyType::EightBitMime),
                        ret: Some(Ret::Headers),
                        envid: Some("Q1 x+y".into()),
                        smtputf8: true,
                        auth: Some("joe+x@b.example".into()),
                    },
                ),
                "MAIL FROM:<a@b.example> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=Q1+20x+2By SMTPUTF8 AUTH=joe+2Bx@b.example\r\n",
            ),
            (
                mail(
                    "a@b",
                    MailParams {
                        body: Some(BodyType::BinaryMime),
                        ret: Some(Ret::Full),
                        ..MailParams::default()
                    },
                ),
                "MAIL FROM:<a@b> BODY=BINARYMIME RET=FULL\r\n",
            ),
            (
                mail(
                    "a@b",
                    MailParams {
                        body: Some(BodyType::SevenBit),
                        ..MailParams::default()
                    },
                ),
                "MAIL FROM:<a@b> BODY=7BIT\r\n",
            ),
            (
                rcpt("x@y.example", RcptParams::default()),
                "RCPT TO:<x@y.example>\r\n",
            ),
            (
                rcpt(
                    "x@y",
                    RcptParams {
                        notify: Some(notify(true, true, false)),
                        orcpt: Some(Orcpt {
                            addr_type: "rfc822".into(),
                            addr: "o+1@y".into(),
                        }),
                    },
                ),
                "RCPT TO:<x@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;o+2B1@y\r\n",
            ),
            (
                rcpt(
                    "x@y",
                    RcptParams {
                        notify: Some(Notify {
                            never: true,
                            success: false,
                            failure: false,
                            delay: false,
                        }),
                        orcpt: None,
                    },
                ),
                "RCPT TO:<x@y> NOTIFY=NEVER\r\n",
            ),
            (
                rcpt(
                    "\"a b\"@y",
                    RcptParams {
                        notify: Some(notify(false, true, true)),
                        orcpt: None,
                    },
                ),
                "RCPT TO:<\"a b\"@y> NOTIFY=FAILURE,DELAY\r\n",
            ),
            (Command::Data, "DATA\r\n"),
            (
                Command::Bdat {
                    size: 0,
                    last: true,
                },
                "BDAT 0 LAST\r\n",
            ),
            (
                Command::Bdat {
                    size: 65536,
                    last: false,
                },
                "BDAT 65536\r\n",
            ),
            (Command::Rset, "RSET\r\n"),
            (Command::Noop, "NOOP\r\n"),
            (Command::Quit, "QUIT\r\n"),
            (Command::StartTls, "STARTTLS\r\n"),
        ]
    }

    #[test]
    fn render_table_and_round_trip() {
        for (cmd, want) in table() {
            let bytes = cmd.to_bytes().expect("renderable");
            assert_eq!(String::from_utf8_lossy(&bytes), want);
            assert_eq!(Command::parse(&bytes).expect("parses back"), cmd, "{want}");
        }
    }

    #[test]
    fn parse_is_tolerant_where_servers_are() {
        let table: &[(&str, Command)] = &[
            ("mail from: <a@b>", mail("a@b", MailParams::default())),
            (
                "Rcpt To:<x@y>  notify=never",
                rcpt(
                    "x@y",
                    RcptParams {
                        notify: Some(Notify {
                            never: true,
                            success: false,
                            failure: false,
                            delay: false,
                        }),
                        orcpt: None,
                    },
                ),
            ),
            (
                "bdat 10 last",
                Command::Bdat {
                    size: 10,
                    last: true,
                },
            ),
            ("NOOP anything", Command::Noop),
            ("quit\n", Command::Quit),
            (
                "MAIL FROM:<a@b> size=5 smtputf8",
                mail(
                    "a@b",
                    MailParams {
                        size: Some(5),
                        smtputf8: true,
                        ..MailParams::default()
                    },
                ),
            ),
            (
                // What Postfix's smtp client sends when it relays with SASL.
                "MAIL FROM:<a@b> SIZE=5 AUTH=<>",
                mail(
                    "a@b",
                    MailParams {
                        size: Some(5),
                        auth: Some("<>".into()),
                        ..MailParams::default()
                    },
                ),
            ),
        ];
        for (line, want) in table {
            assert_eq!(
                &Command::parse(line.as_bytes()).expect(line),
                want,
                "{line}"
            );
        }
    }

    #[test]
    fn parse_errors() {
        type Check = fn(&CommandError) -> bool;
        let table: &[(&str, Check)] = &[
            ("FROB", |e| matches!(e, CommandError::UnknownCommand(_))),
            ("MAIL <a@b>", |e| matches!(e, CommandError::Syntax(_))),
            ("MAIL FROM:a@b", |e| matches!(e, CommandError::Syntax(_))),
            ("MAIL FROM:<a@b", |e| matches!(e, CommandError::Syntax(_))),
            ("MAIL FROM:<a@b>x", |e| matches!(e, CommandError::Syntax(_))),
            ("RCPT TO:<>", |e| matches!(e, CommandError::Syntax(_))),
            ("MAIL FROM:<a@b> SIZE=x", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("MAIL FROM:<a@b> SIZE=99999999999999999999999", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("MAIL FROM:<a@b> BODY=9BIT", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("MAIL FROM:<a@b> SIZE=1 SIZE=2", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("MAIL FROM:<a@b> ENVID=a=b", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("MAIL FROM:<a@b> AUTH=", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("MAIL FROM:<a@b> AUTH=a+0Ab", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("MAIL FROM:<a@b> AUTH=<> AUTH=<>", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("MAIL FROM:<a@b> FOO=1", |e| {
                matches!(e, CommandError::UnknownParameter(_))
            }),
            ("RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("RCPT TO:<a@b> NOTIFY=DELAY,DELAY", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("RCPT TO:<a@b> ORCPT=nosemicolon", |e| {
                matches!(e, CommandError::BadParameter(_))
            }),
            ("DATA now", |e| matches!(e, CommandError::Syntax(_))),
            ("BDAT", |e| matches!(e, CommandError::Syntax(_))),
            ("BDAT -1", |e| matches!(e, CommandError::Syntax(_))),
            ("BDAT 1 FIRST", |e| matches!(e, CommandError::Syntax(_))),
            ("EHLO", |e| matches!(e, CommandError::Syntax(_))),
            ("EHLO a b", |e| matches!(e, CommandError::Syntax(_))),
            ("QUIT\r\nRSET", |e| matches!(e, CommandError::Syntax(_))),
        ];
        for (line, ok) in table {
            let err = Command::parse(line.as_bytes()).expect_err(line);
            assert!(ok(&err), "{line}: {err:?}");
        }
        let long = format!("NOOP {}", "x".repeat(MAX_COMMAND_LINE));
        assert!(matches!(
            Command::parse(long.as_bytes()),
            Err(CommandError::LineTooLong { .. })
        ));
    }

    #[test]
    fn injection_is_refused_at_render() {
        let bad = [
            rcpt("x@y>\r\nRSET", RcptParams::default()),
            mail("a\r\n@b", MailParams::default()),
            Command::Ehlo {
                domain: "a b".into(),
            },
            Command::Ehlo { domain: "".into() },
            rcpt(
                "x@y",
                RcptParams {
                    notify: None,
                    orcpt: Some(Orcpt {
                        addr_type: "rfc822 X".into(),
                        addr: "a".into(),
                    }),
                },
            ),
        ];
        for cmd in bad {
            let mut out = Vec::new();
            assert!(
                matches!(cmd.write_to(&mut out), Err(CommandError::Unrenderable(_))),
                "{cmd:?}"
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn orcpt_values() {
        let o = Orcpt::parse("rfc822;a+2Bb@c").expect("valid");
        assert_eq!(o.addr, "a+b@c");
        assert_eq!(o.to_param(), "rfc822;a+2Bb@c");
        for bad in ["rfc822", ";a@b", "rfc 822;a", "rfc822;a=b", "rfc822;+FF"] {
            assert_eq!(Orcpt::parse(bad), None, "{bad}");
        }
    }
}
