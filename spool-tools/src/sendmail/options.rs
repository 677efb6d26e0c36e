//! The sendmail command line, parsed the way sendmail and Postfix parse it:
//! getopt-style single letters that may be bundled (`-ti`), options whose
//! argument may be attached or separate (`-fjoe` or `-f joe`), and `-o`
//! options named by the letters after them (`-oi`).

use std::path::PathBuf;

use skein_mail::Notify;

/// What the command line asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-t`: take recipients from To/Cc/Bcc (added to any on the line).
    pub extract_recipients: bool,
    /// `-i` / `-oi`: a line with a lone `.` does not end the message.
    pub ignore_dots: bool,
    /// `-f` / `-r`: envelope sender (`<>` or empty = null sender).
    pub sender: Option<String>,
    /// `-F`: full name for a generated From: header.
    pub full_name: Option<String>,
    /// `-C`: configuration file.
    pub config: Option<PathBuf>,
    /// `-N`: DSN NOTIFY for every recipient.
    pub notify: Option<Notify>,
    /// `-R`: DSN RET.
    pub ret: Option<String>,
    /// `-V`: DSN ENVID.
    pub envid: Option<String>,
    /// `-B`: declared body type.
    pub body: Option<String>,
    /// `-v`: say what happened on standard error.
    pub verbose: bool,
    /// Recipient arguments.
    pub recipients: Vec<String>,
    /// `-bp`: list the queue instead of submitting (`mailq`).
    pub list_queue: bool,
    /// `-bs`: an SMTP session on standard input and output.
    pub smtp_session: bool,
    /// Options accepted for compatibility and ignored, for `-v`.
    pub ignored: Vec<String>,
}

/// A command line we cannot run (EX_USAGE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Option letters that take an argument.
const WITH_ARG: &str = "BCFLNORVXbfhoprqe";
/// Option letters without an argument that we accept.
const FLAGS: &str = "tivnmUGIx";

/// Parses the arguments (without argv\[0\]).
pub fn parse(args: &[String]) -> Result<Options, UsageError> {
    let mut o = Options::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            o.recipients.extend(args[i..].iter().cloned());
            break;
        }
        let Some(letters) = arg.strip_prefix('-').filter(|l| !l.is_empty()) else {
            o.recipients.push(arg.clone());
            continue;
        };
        for (pos, c) in letters.char_indices() {
            if WITH_ARG.contains(c) {
                let attached = &letters[pos + c.len_utf8()..];
                let value = if !attached.is_empty() {
                    attached.to_string()
                } else if i < args.len() {
                    i += 1;
                    args[i - 1].clone()
                } else {
                    return Err(UsageError(format!("option -{c} requires an argument")));
                };
                apply_with_arg(&mut o, c, value)?;
                break;
            } else if FLAGS.contains(c) {
                match c {
                    't' => o.extract_recipients = true,
                    'i' => o.ignore_dots = true,
                    'v' => o.verbose = true,
                    _ => o.ignored.push(format!("-{c}")),
                }
            } else {
                return Err(UsageError(format!("unknown option -{c}")));
            }
        }
    }
    Ok(o)
}

fn apply_with_arg(o: &mut Options, c: char, value: String) -> Result<(), UsageError> {
    match c {
        'f' | 'r' => o.sender = Some(value),
        'F' => o.full_name = Some(value),
        'C' => o.config = Some(PathBuf::from(value)),
        'N' => {
            let notify = Notify::parse_relaxed(&value).map_err(|_| {
                UsageError(format!(
                    "-N {value}: expected never, or a list of success, failure, delay"
                ))
            })?;
            o.notify = Some(notify);
        }
        'R' => {
            let v = value.to_ascii_uppercase();
            if v != "FULL" && v != "HDRS" {
                return Err(UsageError(format!("-R {value}: expected full or hdrs")));
            }
            o.ret = Some(v);
        }
        'V' => o.envid = Some(value),
        'B' => {
            let v = value.to_ascii_uppercase();
            if v != "7BIT" && v != "8BITMIME" {
                return Err(UsageError(format!("-B {value}: expected 7bit or 8bitmime")));
            }
            o.body = Some(v);
        }
        'o' => match value.as_str() {
            "i" => o.ignore_dots = true,
            // Delivery and error modes, timeouts, and the like: sendmail
            // tuning that has no meaning for a queueing submission.
            _ => o.ignored.push(format!("-o{value}")),
        },
        'b' => match value.as_str() {
            "m" => {}
            "p" => o.list_queue = true,
            "s" => o.smtp_session = true,
            "d" | "D" | "i" | "v" | "t" | "a" | "h" | "H" | "P" => {
                return Err(UsageError(format!(
                    "-b{value} is not supported by skein sendmail"
                )));
            }
            _ => return Err(UsageError(format!("unknown mode -b{value}"))),
        },
        'q' => {
            return Err(UsageError(
                "-q (run the queue) is not supported: the scheduler runs the queue; use `skein queue flush`"
                    .into(),
            ));
        }
        // -L label, -O option=value, -X logfile, -h hops, -p protocol, -e:
        // accepted for compatibility.
        _ => o.ignored.push(format!("-{c} {value}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, UsageError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn typical_script_lines() {
        let o = p(&["-t", "-i", "-f", "bounce@example.org"]).unwrap();
        assert!(o.extract_recipients && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("bounce@example.org"));

        let o = p(&["-ti", "-fjoe@x", "-oi", "-odb", "ann@y", "bob@z"]).unwrap();
        assert!(o.extract_recipients && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("joe@x"));
        assert_eq!(o.recipients, vec!["ann@y", "bob@z"]);
        assert_eq!(o.ignored, vec!["-odb"]);

        let o = p(&[
            "-F",
            "Joe User",
            "-N",
            "success, failure",
            "-R",
            "hdrs",
            "-V",
            "id1",
            "--",
            "-weird@x",
        ])
        .unwrap();
        assert_eq!(o.full_name.as_deref(), Some("Joe User"));
        assert_eq!(
            o.notify.map(|n| n.to_string()).as_deref(),
            Some("SUCCESS,FAILURE")
        );
        assert_eq!(o.ret.as_deref(), Some("HDRS"));
        assert_eq!(o.envid.as_deref(), Some("id1"));
        assert_eq!(o.recipients, vec!["-weird@x"]);
    }

    #[test]
    fn bp_lists_the_queue() {
        assert!(p(&["-bp"]).unwrap().list_queue);
        assert!(!p(&["a@b"]).unwrap().list_queue);
    }

    #[test]
    fn bs_is_an_smtp_session() {
        assert!(p(&["-bs"]).unwrap().smtp_session);
        assert!(p(&["-i", "-bs"]).unwrap().smtp_session);
        assert!(!p(&["a@b"]).unwrap().smtp_session);
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["-f"][..],
            &["-Z"],
            &["-bd"],
            &["-q1h"],
            &["-N", "sometimes"],
            &["-R", "most"],
            &["-tZ"],
        ] {
            assert!(p(args).is_err(), "{args:?}");
        }
    }
}
