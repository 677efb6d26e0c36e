//! `sendmail -bs`: an SMTP session on standard input and output, as
//! sendmail and Postfix offer it, for programs that speak SMTP to a local
//! mailer without a network connection (some mail clients, `git
//! send-email`, cron implementations).
//!
//! The session runs as the invoking user, like every other `sendmail`
//! submission: each message is submitted exactly as `sendmail -f SENDER
//! RCPT…` would submit it (the spool directly, or `skein-postdrop` for a
//! user who may not write it), recorded with the user's uid. Commands are
//! parsed by skein's SMTP codec (`skein-smtp-codec`, fuzzed); a line is
//! bounded by `smtpd.max_line_length`, the message by
//! `smtpd.max_message_size` (buffered while it arrives, as the postdrop
//! path buffers any submission), the recipients by
//! `smtpd.max_recipients`. Offered: PIPELINING (replies come in order on
//! standard output), 8BITMIME, SMTPUTF8, SIZE, ENHANCEDSTATUSCODES. Not
//! offered: STARTTLS and AUTH (there is no network to protect, and the
//! kernel says who the user is), CHUNKING, DSN. End of input ends the
//! session like QUIT.

use std::io::{self, BufRead, Read, Write};

use skein_config::{Config, Source};
use skein_smtp_codec::server::ServerCommand;
use skein_smtp_codec::{Command, CommandError};

use super::Options;
use crate::sysexits::*;

/// One SMTP reply, CRLF-terminated, multi-line when `text` has `\n`s.
fn reply(out: &mut dyn Write, code: u16, text: &str) -> io::Result<()> {
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 < lines.len() { '-' } else { ' ' };
        write!(out, "{code}{sep}{line}\r\n")?;
    }
    out.flush()
}

/// Reads one line (with its ending) of at most `limit` bytes; a longer
/// one is read to its end and reported as `Err(())` inside `Ok`.
fn read_line(input: &mut dyn BufRead, limit: usize) -> io::Result<Option<Result<Vec<u8>, ()>>> {
    let mut line = Vec::new();
    let n = (&mut *input)
        .take(limit as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && line.len() >= limit {
        // Too long: skip the rest of it.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let n = (&mut *input).take(64 * 1024).read_until(b'\n', &mut rest)?;
            if n == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Some(Err(())));
    }
    Ok(Some(Ok(line)))
}

/// The transaction in progress.
#[derive(Default)]
struct Transaction {
    sender: Option<String>,
    params: skein_smtp_codec::MailParams,
    rcpts: Vec<String>,
}

/// Runs the session until QUIT or end of input. The returned error is for
/// standard error (the session itself has said what it could).
pub fn serve(
    config: &Config,
    source: &Source,
    base: &Options,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> io::Result<()> {
    let host = &config.hostname;
    let max_line = (config.smtpd.max_line_length as usize).max(512);
    let max_size = config.smtpd.max_message_size.bytes();
    let max_rcpts = config.smtpd.max_recipients.max(1) as usize;
    reply(out, 220, &format!("{host} ESMTP skein (sendmail -bs)"))?;
    let mut greeted = false;
    let mut tx = Transaction::default();
    loop {
        let line = match read_line(input, max_line)? {
            None => return Ok(()),
            Some(Err(())) => {
                reply(out, 500, "5.5.2 Line too long")?;
                continue;
            }
            Some(Ok(line)) => line,
        };
        let command = match ServerCommand::parse(&line) {
            Ok(command) => command,
            Err(CommandError::UnknownCommand(verb)) => {
                reply(out, 500, &format!("5.5.2 Command unrecognized: {verb}"))?;
                continue;
            }
            Err(CommandError::UnknownParameter(p)) => {
                reply(out, 555, &format!("5.5.4 Unsupported parameter: {p}"))?;
                continue;
            }
            Err(e) => {
                reply(out, 501, &format!("5.5.4 Syntax error: {e}"))?;
                continue;
            }
        };
        match command {
            ServerCommand::Core(Command::Ehlo { domain }) => {
                greeted = true;
                tx = Transaction::default();
                reply(
                    out,
                    250,
                    &format!(
                        "{host} Hello {domain}\nPIPELINING\n8BITMIME\nSMTPUTF8\nSIZE {max_size}\nENHANCEDSTATUSCODES"
                    ),
                )?;
            }
            ServerCommand::Core(Command::Helo { .. }) => {
                greeted = true;
                tx = Transaction::default();
                reply(out, 250, host)?;
            }
            ServerCommand::Core(Command::Mail {
                reverse_path,
                params,
            }) => {
                if !greeted {
                    reply(out, 503, "5.5.1 Send EHLO or HELO first")?;
                } else if tx.sender.is_some() {
                    reply(out, 503, "5.5.1 Nested MAIL command")?;
                } else if params.size.is_some_and(|s| s > max_size) {
                    reply(out, 552, "5.3.4 Message size exceeds fixed limit")?;
                } else {
                    tx.sender = Some(reverse_path);
                    tx.params = params;
                    reply(out, 250, "2.1.0 Ok")?;
                }
            }
            ServerCommand::Core(Command::Rcpt { forward_path, .. }) => {
                if tx.sender.is_none() {
                    reply(out, 503, "5.5.1 Need MAIL before RCPT")?;
                } else if tx.rcpts.len() >= max_rcpts {
                    reply(out, 452, "4.5.3 Too many recipients")?;
                } else if skein_mail::address::Mailbox::parse(&forward_path, true).is_err()
                    && forward_path.contains('@')
                {
                    reply(out, 501, "5.1.3 Bad recipient address syntax")?;
                } else {
                    tx.rcpts.push(forward_path);
                    reply(out, 250, "2.1.5 Ok")?;
                }
            }
            ServerCommand::Core(Command::Data) => {
                if tx.sender.is_none() {
                    reply(out, 503, "5.5.1 Need MAIL command")?;
                    continue;
                }
                if tx.rcpts.is_empty() {
                    reply(out, 554, "5.5.1 No valid recipients")?;
                    continue;
                }
                reply(out, 354, "End data with <CR><LF>.<CR><LF>")?;
                let answer = match read_data(input, max_size)? {
                    // End of input inside DATA: nothing is queued.
                    Data::Abandoned => return Ok(()),
                    Data::TooBig => (552, "5.3.4 Message size exceeds fixed limit".to_owned()),
                    Data::Message(bytes) => match submit(config, source, base, &tx, &bytes) {
                        Ok(()) => (250, "2.0.0 Ok: queued".to_owned()),
                        Err(f) => failure_reply(&f),
                    },
                };
                tx = Transaction::default();
                reply(out, answer.0, &answer.1)?;
            }
            ServerCommand::Core(Command::Rset) => {
                tx = Transaction::default();
                reply(out, 250, "2.0.0 Ok")?;
            }
            ServerCommand::Core(Command::Noop) => reply(out, 250, "2.0.0 Ok")?,
            ServerCommand::Core(Command::Quit) => {
                reply(out, 221, "2.0.0 Bye")?;
                return Ok(());
            }
            ServerCommand::Vrfy(_) => reply(
                out,
                252,
                "2.5.0 Cannot VRFY; send the message and it will be tried",
            )?,
            ServerCommand::Help => reply(
                out,
                214,
                "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
            )?,
            ServerCommand::Core(Command::Bdat { .. })
            | ServerCommand::Core(Command::StartTls)
            | ServerCommand::Auth { .. }
            | ServerCommand::Expn(_) => reply(out, 502, "5.5.1 Command not implemented")?,
        }
    }
}

/// What DATA brought.
#[derive(Debug, PartialEq, Eq)]
enum Data {
    /// The content, dot-unstuffed, up to the lone `.` line.
    Message(Vec<u8>),
    /// Larger than the limit: read to its end, not kept.
    TooBig,
    /// End of input before the `.` line: the message is abandoned.
    Abandoned,
}

/// Reads the DATA content; see [`Data`].
fn read_data(input: &mut dyn BufRead, max: u64) -> io::Result<Data> {
    let mut message = Vec::new();
    let mut too_big = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        // Lines of any length: only the total is bounded.
        let n = (&mut *input).take(64 * 1024).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(Data::Abandoned);
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body == b"." {
            return Ok(if too_big {
                Data::TooBig
            } else {
                Data::Message(message)
            });
        }
        let unstuffed = if line.first() == Some(&b'.') {
            &line[1..]
        } else {
            &line[..]
        };
        if message.len() as u64 + unstuffed.len() as u64 > max {
            too_big = true;
            message = Vec::new();
        }
        if !too_big {
            message.extend_from_slice(unstuffed);
        }
    }
}

/// Submits one message as `sendmail -i -f SENDER RCPT…` would.
fn submit(
    config: &Config,
    source: &Source,
    base: &Options,
    tx: &Transaction,
    message: &[u8],
) -> Result<(), Failure> {
    let sender = tx.sender.clone().unwrap_or_default();
    let opts = Options {
        sender: Some(if sender.is_empty() {
            "<>".to_owned()
        } else {
            sender
        }),
        recipients: tx.rcpts.clone(),
        extract_recipients: false,
        ignore_dots: true,
        ret: tx.params.ret.map(|r| r.keyword().to_owned()),
        envid: tx.params.envid.clone(),
        body: tx.params.body.map(|b| b.keyword().to_owned()),
        ..base.clone()
    };
    let submitter = super::Submitter::new(config, &opts, source.clone())?;
    submitter.submit(&mut io::Cursor::new(message))
}

/// The SMTP reply for a submission that failed with `f`.
fn failure_reply(f: &Failure) -> (u16, String) {
    let text = f.message.replace(['\r', '\n'], " ");
    match f.code {
        EX_DATAERR if text.contains("size") || text.contains("larger") => {
            (552, format!("5.3.4 {text}"))
        }
        EX_DATAERR => (554, format!("5.6.0 {text}")),
        _ => (451, format!("4.3.0 {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_unstuffed_and_bounded() {
        let table: Vec<(&[u8], u64, Data)> = vec![
            (
                b"a\r\n..b\r\n.\r\n",
                100,
                Data::Message(b"a\r\n.b\r\n".to_vec()),
            ),
            (b"a\n.\n", 100, Data::Message(b"a\n".to_vec())),
            (b"0123456789\r\n.\r\nNEXT\r\n", 5, Data::TooBig),
            (b"a\r\nno end", 100, Data::Abandoned),
        ];
        for (input, max, want) in table {
            let mut cursor = io::Cursor::new(input);
            let got = read_data(&mut cursor, max).expect("read");
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        }
        // What follows the message stays for the next command.
        let mut cursor = io::Cursor::new(&b"x\r\n.\r\nQUIT\r\n"[..]);
        read_data(&mut cursor, 100).expect("read");
        let mut rest = String::new();
        cursor.read_line(&mut rest).expect("rest");
        assert_eq!(rest, "QUIT\r\n");
    }

    #[test]
    fn over_long_lines_are_skipped_whole() {
        let mut input = vec![b'x'; 3000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let mut cursor = io::Cursor::new(input);
        assert_eq!(read_line(&mut cursor, 512).expect("read"), Some(Err(())));
        assert_eq!(
            read_line(&mut cursor, 512).expect("read"),
            Some(Ok(b"NOOP\r\n".to_vec()))
        );
        assert_eq!(read_line(&mut cursor, 512).expect("read"), None);
    }
}
