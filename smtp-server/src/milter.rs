//! Content filters in the smtpd (`smtpd.milters`, and
//! `smtpd.submission_milters` for the submission listener): each listener
//! has its list. A session talks to them through one
//! [`skein_milter::filter::Session`]: MAIL and RCPT as they come (a
//! refusal is that command's reply), the content at the end of DATA,
//! before the commit. The 250 comes only after the message the filters
//! produced is on stable storage.

use skein_config::SmtpdConfig;
use skein_milter::filter::Milters;

use crate::policy::Refusal;
use crate::session::Port;

/// The filter lists of the smtpd's listeners.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    smtp: Milters,
    submission: Milters,
}

impl Filters {
    /// The lists `smtpd` names (validated by the configuration).
    pub fn new(smtpd: &SmtpdConfig) -> Filters {
        let submission = smtpd.submission_milters.as_ref().unwrap_or(&smtpd.milters);
        Filters {
            smtp: Milters::configured(&smtpd.milters, smtpd),
            submission: Milters::configured(submission, smtpd),
        }
    }

    /// The list for mail that came in on `port`.
    pub fn on(&self, port: Port) -> &Milters {
        match port {
            Port::Smtp => &self.smtp,
            Port::Submission => &self.submission,
        }
    }
}

/// A filter's refusal as the smtpd's.
pub fn refusal(reply: skein_milter::filter::Reply) -> Refusal {
    Refusal {
        code: reply.code,
        enhanced: reply.enhanced.into(),
        text: reply.text,
    }
}
