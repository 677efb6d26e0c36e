//! Every command a server answers.

use crate::command::Command;
use crate::error::CommandError;

/// A command as a server sees it: one of the [`Command`]s both sides
/// share, or one that only a server has to understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCommand {
    /// A command the codec renders and parses for both sides.
    Core(Command),
    /// `VRFY string` (RFC 5321 §4.1.1.6).
    Vrfy(String),
    /// `EXPN string` (RFC 5321 §4.1.1.7).
    Expn(String),
    /// `HELP [string]`.
    Help,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism, upper-cased.
        mechanism: String,
        /// The initial response, base64 as sent (`=` for an empty one).
        initial: Option<String>,
    },
}

impl ServerCommand {
    /// Parses one command line (without or with its CRLF). The server-only
    /// verbs are recognised first; everything else goes to
    /// [`Command::parse`], whose errors are returned unchanged.
    pub fn parse(line: &[u8]) -> Result<ServerCommand, CommandError> {
        let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        let verb = line[..verb_end].to_ascii_uppercase();
        let extra = matches!(verb.as_slice(), b"VRFY" | b"EXPN" | b"HELP" | b"AUTH");
        if !extra {
            return Command::parse(line).map(ServerCommand::Core);
        }
        // Reuse Command::parse's checks (length, control characters,
        // UTF-8) by parsing the line with a harmless verb in its place.
        let mut probe = b"NOOP".to_vec();
        probe.extend_from_slice(&line[verb_end..]);
        Command::parse(&probe)?;
        let rest = std::str::from_utf8(&line[verb_end..])
            .map_err(|_| CommandError::Syntax("not UTF-8".into()))?
            .trim_end_matches(['\r', '\n'])
            .trim();
        match verb.as_slice() {
            b"VRFY" | b"EXPN" if rest.is_empty() => Err(CommandError::Syntax(format!(
                "{} needs an argument",
                String::from_utf8_lossy(&verb)
            ))),
            b"VRFY" => Ok(ServerCommand::Vrfy(rest.to_owned())),
            b"EXPN" => Ok(ServerCommand::Expn(rest.to_owned())),
            b"HELP" => Ok(ServerCommand::Help),
            _ => {
                let mut words = rest.split(' ').filter(|w| !w.is_empty());
                let mechanism = words
                    .next()
                    .ok_or_else(|| CommandError::Syntax("AUTH needs a mechanism".into()))?
                    .to_ascii_uppercase();
                let initial = words.next().map(str::to_owned);
                if words.next().is_some() {
                    return Err(CommandError::Syntax("AUTH: too many arguments".into()));
                }
                Ok(ServerCommand::Auth { mechanism, initial })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok: Vec<(&[u8], ServerCommand)> = vec![
            (b"VRFY joe\r\n", ServerCommand::Vrfy("joe".into())),
            (b"vrfy  <joe@x> ", ServerCommand::Vrfy("<joe@x>".into())),
            (b"EXPN list", ServerCommand::Expn("list".into())),
            (b"HELP", ServerCommand::Help),
            (b"help mail\r\n", ServerCommand::Help),
            (
                b"AUTH plain dGVzdAB0ZXN0AHRlc3Q=",
                ServerCommand::Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some("dGVzdAB0ZXN0AHRlc3Q=".into()),
                },
            ),
            (
                b"AUTH LOGIN",
                ServerCommand::Auth {
                    mechanism: "LOGIN".into(),
                    initial: None,
                },
            ),
            (b"NOOP", ServerCommand::Core(Command::Noop)),
            (b"QUIT\r\n", ServerCommand::Core(Command::Quit)),
        ];
        for (line, want) in ok {
            assert_eq!(ServerCommand::parse(line), Ok(want), "{line:?}");
        }
        let bad: &[&[u8]] = &[
            b"VRFY",
            b"EXPN \r\n",
            b"AUTH",
            b"AUTH PLAIN a b",
            b"VRFY a\0b",
            b"VRFY \xff",
            b"HELP a\rb",
            b"XYZZY",
            b"",
        ];
        for line in bad {
            assert!(ServerCommand::parse(line).is_err(), "{line:?}");
        }
    }
}
