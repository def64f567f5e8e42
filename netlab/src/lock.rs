//! One run at a time: commands that change a lab hold an exclusive `flock`
//! on a file under `/run/netlab/.locks/`, one per lab and one per lab host
//! (labs on one host share its forwarding switch and uplink). A file holds
//! its holder's pid and command so a waiting run can say whom it waits for.
//!
//! The holder deletes the file as it lets go, while still holding the lock,
//! so files do not pile up. A waiter that then gets the lock holds it on a
//! file no longer at the path (or replaced by a newer one), so after locking
//! it checks that its file is still the path's and starts again if not: two
//! runs never each hold "the" lock.

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
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

/// A held lock; dropping it deletes its file and releases it (the process
/// ending, however, releases it too, leaving the file for the next run).
pub struct RunLock {
    path: PathBuf,
    _file: Flock<File>,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Before the lock goes (the field drops after this): a waiter that
        // locks the unlinked file sees it is not the path's and retries.
        let _ = fs::remove_file(&self.path);
    }
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
    acquire_in(&lock_dir(), scope, command, bound)
}

fn acquire_in(dir: &Path, scope: &Scope, command: &str, bound: Duration) -> Result<RunLock> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(scope.file_name());
    let started = Instant::now();
    let mut said = false;
    loop {
        if let Some(mut held) = try_lock(&path)? {
            let me = format!("{} {command}\n", std::process::id());
            held.set_len(0)?;
            held.write_all(me.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(RunLock { path, _file: held });
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

/// The lock on the file at `path`, if no one holds it.
fn try_lock(path: &Path) -> Result<Option<Flock<File>>> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        match lock_if_current(file, path)? {
            Attempt::Locked(held) => return Ok(Some(held)),
            Attempt::Busy => return Ok(None),
            Attempt::Stale => continue,
        }
    }
}

enum Attempt {
    Locked(Flock<File>),
    Busy,
    /// Its holder released and deleted the file between our open and our
    /// lock: the lock is on a file no longer at the path.
    Stale,
}

/// Lock `file`, opened from `path`, if it is still the file at `path`.
fn lock_if_current(file: File, path: &Path) -> Result<Attempt> {
    let held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => held,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(Attempt::Busy),
        Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    };
    let locked = held
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    let current = fs::metadata(path).ok();
    Ok(
        if current.is_some_and(|c| c.dev() == locked.dev() && c.ino() == locked.ino()) {
            Attempt::Locked(held)
        } else {
            Attempt::Stale
        },
    )
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

    /// Threads in one process conflict like processes do: `flock` locks
    /// belong to open files, and each acquire opens its own.
    #[test]
    fn lockers_exclude_each_other_and_leave_no_file() {
        use std::sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        };
        let dir = std::env::temp_dir().join(format!("netlab-lock-excl-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (dir, inside, most) = (dir.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..40 {
                        let scope = Scope::Lab("x".into());
                        let lock = acquire_in(&dir, &scope, "test", Duration::from_secs(60))
                            .expect("acquire");
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(lock);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "two lockers held the lock at once"
        );
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "lock files left behind: {left:?}");
        fs::remove_dir(&dir).unwrap();
    }

    /// The interleaving the inode check is for, step by step: a waiter
    /// opened the file, its holder released it (deleting it), a third run
    /// locked a new file at the path; the waiter's lock would succeed on the
    /// old file and must count as stale.
    #[test]
    fn a_lock_on_a_deleted_file_is_stale() {
        let dir = std::env::temp_dir().join(format!("netlab-lock-stale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let scope = Scope::Lab("x".into());
        let first = acquire_in(&dir, &scope, "first", Duration::ZERO).unwrap();
        let waiter_file = File::open(&first.path).unwrap();
        let path = first.path.clone();
        drop(first);
        let third = acquire_in(&dir, &scope, "third", Duration::ZERO).unwrap();
        assert!(matches!(
            lock_if_current(waiter_file, &path).unwrap(),
            Attempt::Stale
        ));
        drop(third);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_held_lock_makes_others_wait_then_give_up() {
        let dir = std::env::temp_dir().join(format!("netlab-lock-busy-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let scope = Scope::Host(None);
        let held = acquire_in(&dir, &scope, "netlab up", Duration::ZERO).unwrap();
        let err = acquire_in(&dir, &scope, "netlab down", Duration::from_millis(100))
            .err()
            .expect("a second locker got a held lock");
        let pid = std::process::id();
        assert!(
            err.to_string().contains(&format!("netlab up (pid {pid})")),
            "{err}"
        );
        drop(held);
        let again = acquire_in(&dir, &scope, "netlab down", Duration::ZERO).unwrap();
        drop(again);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir(&dir).unwrap();
    }
}
