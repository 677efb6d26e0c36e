//! `skein-archive DIR`: a complete transport agent that files every
//! message it is given under DIR, one file per job. The walk-through in
//! docs/writing-an-agent.md explains it line by line.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use skein_agent::proto::{EnhancedCode, Job};
use skein_agent::{Delivery, run_simple};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: skein-archive DIR");
        return ExitCode::from(64); // EX_USAGE
    };
    // Channel "archive" unless the scheduler says otherwise; 4 jobs ahead.
    run_simple("archive", "skein-archive", 4, async |job: &Job| {
        let (dir, owned) = (dir.clone(), job.clone());
        // File I/O blocks: keep it off the runtime's thread.
        let filed = tokio::task::spawn_blocking(move || archive(&dir, &owned)).await;
        let delivery = match filed {
            Ok(Ok(path)) => Delivery::delivered(None, format!("archived as {}", path.display())),
            Ok(Err(e)) => {
                Delivery::deferred(EnhancedCode::TRANSIENT, format!("archive: {e}"), None)
            }
            Err(e) => Delivery::deferred(EnhancedCode::TRANSIENT, format!("archive: {e}"), None),
        };
        // One result per recipient, in order: the file holds them all.
        job.recipients.iter().map(|_| delivery.clone()).collect()
    })
}

/// Copies the job's message into `dir` durably (temporary file, fsync,
/// rename, fsync of the directory): only then may it be "delivered".
fn archive(dir: &Path, job: &Job) -> io::Result<PathBuf> {
    let mut message = File::open(&job.message_path)?;
    message.seek(SeekFrom::Start(job.message_offset))?;
    let name = format!("{}.{}", job.queue_id, job.id.0);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut out = File::create(&tmp)?;
    if io::copy(&mut message.take(job.size), &mut out)? != job.size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "message file is short",
        ));
    }
    out.sync_all()?;
    let path = dir.join(format!("{name}.eml"));
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}
