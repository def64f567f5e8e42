//! One run at a time: commands that change a lab hold an exclusive `flock`
//! on a file under `/run/netlab/.locks/`, one per lab and one per lab host
//! (labs on one host share its forwarding switch and uplink). The files are
//! never deleted: removing a lock file while someone waits on it would let
//! two runs each hold "the" lock. A file holds its holder's pid and command
//! so a waiting run can say whom it waits for.

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use crate::state::STATE_DIR;

/// How long a run waits for another before giving up.
pub const WAIT_BOUND: Duration = Duration::from_secs(120);

/// A held lock; dropping it (or the process ending, however) releases it.
pub struct RunLock {
    _file: Flock<File>,
}

/// What a lock guards, for its file name and for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Lab(String),
    /// The lab host: a named network namespace, or `None` for netlab's own.
    Host(Option<String>),
}

impl Scope {
    fn file_name(&self) -> String {
        match self {
            Scope::Lab(name) => format!("lab-{name}.lock"),
            Scope::Host(Some(netns)) => format!("host-netns-{netns}.lock"),
            Scope::Host(None) => "host-self.lock".into(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Lab(name) => format!("lab {name}"),
            Scope::Host(Some(netns)) => format!("lab host netns {netns}"),
            Scope::Host(None) => "this lab host".into(),
        }
    }
}

pub fn lock_dir() -> PathBuf {
    PathBuf::from(STATE_DIR).join(".locks")
}

/// Take the lock of `scope` for `command` (as `netlab up`), waiting up to
/// `bound` for its holder; says once whom it waits for.
pub fn acquire(scope: &Scope, command: &str, bound: Duration) -> Result<RunLock> {
    let dir = lock_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(scope.file_name());
    let started = Instant::now();
    let mut said = false;
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut held) => {
                let me = format!("{} {command}\n", std::process::id());
                held.set_len(0)?;
                held.write_all(me.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok(RunLock { _file: held });
            }
            Err((_, Errno::EWOULDBLOCK)) => {}
            Err((_, e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        let holder = holder(&path);
        if started.elapsed() >= bound {
            bail!(
                "{} is busy: {holder} has held it for over {}s",
                scope.describe(),
                bound.as_secs()
            );
        }
        if !said {
            eprintln!("netlab: waiting for {holder} on {}", scope.describe());
            said = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `netlab up (pid 12)` from a lock file's `12 netlab up`.
fn holder(path: &std::path::Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    match text.trim().split_once(' ') {
        Some((pid, command)) => format!("{command} (pid {pid})"),
        None => "another netlab run".into(),
    }
}

/// The locks a command that changes lab `lab` on host `host_netns` holds:
/// the lab's first, then its host's (always in this order, so two runs
/// never wait on each other).
pub fn lab_and_host(lab: &str, host_netns: Option<&str>, command: &str) -> Result<[RunLock; 2]> {
    let lab_lock = acquire(&Scope::Lab(lab.into()), command, WAIT_BOUND)?;
    let host_lock = acquire(
        &Scope::Host(host_netns.map(str::to_string)),
        command,
        WAIT_BOUND,
    )?;
    Ok([lab_lock, host_lock])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_holder_is_named_from_the_lock_file() {
        let dir = std::env::temp_dir().join(format!("netlab-lock-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.lock");
        fs::write(&path, "4242 netlab up --sandbox\n").unwrap();
        assert_eq!(holder(&path), "netlab up --sandbox (pid 4242)");
        fs::write(&path, "").unwrap();
        assert_eq!(holder(&path), "another netlab run");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn lock_files_of_labs_and_hosts_never_share_a_name() {
        let names = [
            Scope::Lab("x".into()).file_name(),
            Scope::Host(Some("x".into())).file_name(),
            Scope::Host(None).file_name(),
        ];
        assert_eq!(
            names
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            3
        );
    }
}
