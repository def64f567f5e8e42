//! Network namespaces: named ones that `ip netns` lists and `ip netns exec`
//! enters, created and entered without forking (the process runs tokio's
//! threads), and work done inside them on a thread that entered them.

use std::{
    fs::{self, File},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `statfs` magic of nsfs, the filesystem a namespace file lives on.
const NSFS_MAGIC: i64 = 0x6e73_6673;

pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// An open network namespace: either a named one or the namespace netlab
/// itself started in.
#[derive(Debug)]
pub struct Netns {
    /// `None` for the namespace netlab started in.
    pub name: Option<String>,
    fd: OwnedFd,
}

impl Netns {
    /// The namespace the process started in (read before any thread moved).
    pub fn own() -> Result<Netns> {
        let fd = File::open("/proc/self/ns/net").context("opening /proc/self/ns/net")?;
        Ok(Netns {
            name: None,
            fd: fd.into(),
        })
    }

    /// A named namespace (`/run/netns/<name>`).
    pub fn open(name: &str) -> Result<Netns> {
        let path = netns_path(name);
        let file =
            File::open(&path).with_context(|| format!("opening network namespace {name}"))?;
        if !is_nsfs(&file) {
            bail!("{} is not a mounted network namespace", path.display());
        }
        Ok(Netns {
            name: Some(name.to_string()),
            fd: file.into(),
        })
    }

    /// The lab host: a named namespace or the one netlab started in.
    pub fn host(name: Option<&str>) -> Result<Netns> {
        match name {
            Some(n) => Netns::open(n)
                .with_context(|| format!("the lab host namespace {n} (from --host-netns)")),
            None => Netns::own(),
        }
    }

    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("netns {n}"),
            None => "the lab host".to_string(),
        }
    }

    /// Inode that identifies the namespace (what `/proc/<pid>/ns/net` links to).
    pub fn inode(&self) -> Result<u64> {
        let st = nix::sys::stat::fstat(&self.fd).context("fstat on a namespace")?;
        Ok(st.st_ino)
    }

    pub fn try_clone(&self) -> Result<Netns> {
        Ok(Netns {
            name: self.name.clone(),
            fd: self.fd.try_clone().context("duplicating a namespace fd")?,
        })
    }

    /// Run `f` on a fresh thread that has entered this namespace. The caller's
    /// threads never change namespace.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let fd = self.fd.try_clone().context("duplicating a namespace fd")?;
        let label = self.label();
        std::thread::spawn(move || {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {label}"))?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread working in {} panicked", self.label()))?
    }

    /// A netlink handle whose socket lives in this namespace. The socket is
    /// opened on a thread that entered the namespace and keeps it; the
    /// connection is driven by the current tokio runtime.
    pub async fn netlink(&self) -> Result<rtnetlink::Handle> {
        let rt = tokio::runtime::Handle::current();
        let (connection, handle) = self
            .run(move || {
                let _guard = rt.enter();
                let (connection, handle, _) =
                    rtnetlink::new_connection().context("opening a netlink socket")?;
                Ok((connection, handle))
            })
            .with_context(|| format!("opening netlink in {}", self.label()))?;
        tokio::spawn(connection);
        Ok(handle)
    }

    /// Read a sysctl (`net/ipv4/ip_forward`) as seen in this namespace.
    pub fn read_sysctl(&self, key: &str) -> Result<String> {
        let path = format!("/proc/sys/{key}");
        let label = self.label();
        self.run(move || {
            fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .with_context(|| format!("reading {path} in {label}"))
        })
    }

    pub fn write_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{key}");
        let value = value.to_string();
        let label = self.label();
        self.run(move || {
            fs::write(&path, value).with_context(|| format!("writing {path} in {label}"))
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

fn is_nsfs(file: &File) -> bool {
    nix::sys::statfs::fstatfs(file).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Whether `/run/netns/<name>` exists as a mounted namespace.
pub fn exists(name: &str) -> bool {
    File::open(netns_path(name)).is_ok_and(|f| is_nsfs(&f))
}

/// Names in `/run/netns`, with whether each is a mounted namespace (a file
/// left by a crash between creating and mounting is not).
pub fn list() -> Result<Vec<(String, bool)>> {
    let dir = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context("listing /run/netns"),
    };
    let mut out = Vec::new();
    for entry in dir {
        let entry = entry.context("listing /run/netns")?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let mounted = File::open(entry.path()).is_ok_and(|f| is_nsfs(&f));
        out.push((name, mounted));
    }
    out.sort();
    Ok(out)
}

/// Make `/run/netns` a shared mount point as iproute2 does, so namespace
/// mounts made here propagate to other mount namespaces (and `ip netns exec`
/// sees them from anywhere).
fn prepare_run_dir() -> Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR).context("creating /run/netns")?;
    let shared = |flags| {
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            None::<&str>,
            flags,
            None::<&str>,
        )
    };
    if shared(MsFlags::MS_SHARED | MsFlags::MS_REC).is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself first.
    mount(
        Some(NETNS_RUN_DIR),
        NETNS_RUN_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("bind-mounting /run/netns onto itself")?;
    shared(MsFlags::MS_SHARED | MsFlags::MS_REC).context("making /run/netns a shared mount")?;
    Ok(())
}

/// Create the named namespace `name`. `setup` runs inside the new namespace
/// before it gets its name (so a marker set there is present from the moment
/// anyone can see the namespace).
pub fn create(name: &str, setup: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    prepare_run_dir()?;
    let path = netns_path(name);
    let name_owned = name.to_string();
    std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        setup()?;
        // Exclusive create: never adopt someone else's namespace.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let tid = nix::unistd::gettid();
        let src = format!("/proc/self/task/{tid}/ns/net");
        if let Err(e) = mount(
            Some(src.as_str()),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            let _ = fs::remove_file(&path);
            return Err(e).with_context(|| {
                format!("bind-mounting the new namespace onto {}", path.display())
            });
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread creating namespace {name_owned} panicked"))?
    .with_context(|| format!("creating network namespace {name}"))
}

/// Remove the named namespace `name` (its mount and file). The namespace
/// itself lives on while a process or open fd still holds it.
pub fn delete(name: &str) -> Result<()> {
    let path = netns_path(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {}", path.display())),
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}
