//! Entering the container's network namespace. Work for the Pod side runs on a dedicated OS
//! thread that calls setns(2) first and ends with the work, with its own single-threaded
//! runtime; it must never switch the namespace of the caller's thread or of a shared tokio worker.

use std::fs::File;
use std::future::Future;
use std::io::ErrorKind;
use std::path::Path;

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

use super::error::{CniError, Code};

/// Open `CNI_NETNS`: a missing path means the container is gone (code 3); a path that is not a
/// namespace is an invalid environment (code 4).
pub fn open(path: &Path) -> Result<File, CniError> {
    let file = File::open(path).map_err(|e| {
        let code = if e.kind() == ErrorKind::NotFound {
            Code::UnknownContainer
        } else {
            Code::InvalidEnv
        };
        CniError::with_cause(
            code,
            format!("CNI_NETNS {} cannot be opened", path.display()),
            e,
        )
    })?;
    let fs = fstatfs(&file).map_err(|e| {
        CniError::with_cause(
            Code::InvalidEnv,
            format!("CNI_NETNS {} cannot be inspected", path.display()),
            e,
        )
    })?;
    if fs.filesystem_type() != NSFS_MAGIC {
        return Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_NETNS {} is not a network namespace", path.display()),
        ));
    }
    Ok(file)
}

/// A netlink connection bound to the namespace of the thread that opened it, with the
/// single-threaded runtime that drives it (and any other async work of the plugin, e.g. OVSDB).
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Open a connection in the current thread's network namespace.
    pub fn open() -> Result<Netlink, CniError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CniError::host("starting the tokio runtime", e))?;
        let handle = {
            let _ctx = rt.enter();
            super::link::connect()?
        };
        Ok(Netlink { rt, handle })
    }

    /// Drive `work` to completion on the calling thread.
    pub fn run<'a, T, Fut>(
        &'a self,
        work: impl FnOnce(&'a rtnetlink::Handle) -> Fut,
    ) -> Result<T, CniError>
    where
        Fut: Future<Output = Result<T, CniError>> + 'a,
    {
        self.rt.block_on(work(&self.handle))
    }
}

/// Run `work` inside the network namespace `ns`, on a fresh thread with its own netlink
/// connection in that namespace.
pub fn run_in<T, F>(ns: &File, what: &str, work: F) -> Result<T, CniError>
where
    T: Send,
    F: FnOnce(&Netlink) -> Result<T, CniError> + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
                CniError::host(format!("entering the container netns to {what}"), e)
            })?;
            work(&Netlink::open()?)
        })
        .join()
        .unwrap_or_else(|_| Err(CniError::host(format!("thread to {what}"), "panicked")))
    })
}
