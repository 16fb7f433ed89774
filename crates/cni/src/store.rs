//! Pod IP reservations of one Node, host-local style: one file per reserved address under the
//! state directory (name = the address, content = container id and interface name), changed only
//! while holding an exclusive `flock` on `<dir>/lock`, so concurrent ADD/DEL of the kubelet never
//! hand out one address twice. It must never reserve the gateway, network or broadcast address.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::config::PodSubnet;
use super::error::{CniError, Code};
use ovs_egress_inputs::ip_to_u128;

const LOCK_FILE: &str = "lock";

/// Who holds a reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Owner<'_> {
    fn content(&self) -> String {
        format!("{}\n{}\n", self.container_id, self.ifname)
    }
}

pub struct Store {
    dir: PathBuf,
}

/// The exclusive lock; released when dropped (the file is closed).
struct Locked {
    _file: File,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    fn lock(&self) -> Result<Locked, CniError> {
        let fail = |what: &str, e: std::io::Error| {
            CniError::host(
                format!("{what} IP state directory {}", self.dir.display()),
                e,
            )
        };
        fs::create_dir_all(&self.dir).map_err(|e| fail("creating", e))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK_FILE))
            .map_err(|e| fail("opening the lock of", e))?;
        file.lock().map_err(|e| fail("locking", e))?;
        Ok(Locked { _file: file })
    }

    fn reserved(&self) -> Result<HashSet<IpAddr>, CniError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| {
            CniError::host(
                format!("reading IP state directory {}", self.dir.display()),
                e,
            )
        })?;
        Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect())
    }

    /// Reserve the lowest free address after the gateway (wrapping around to the addresses
    /// before it) for `owner`.
    pub fn allocate(&self, cidr: &PodSubnet, owner: &Owner) -> Result<IpAddr, CniError> {
        let _lock = self.lock()?;
        if let Some(ip) = self.find_locked(owner)? {
            return Err(CniError::new(
                Code::HostOperation,
                format!(
                    "container {} interface {} already holds IP {ip} in {}; DEL it first",
                    owner.container_id,
                    owner.ifname,
                    self.dir.display()
                ),
            ));
        }
        let reserved = self.reserved()?;
        let (first, last) = cidr.usable();
        let gw = ip_to_u128(cidr.gateway);
        let candidates = (gw + 1..=last).chain(first..gw).map(|v| cidr.to_ip(v));
        for ip in candidates {
            if reserved.contains(&ip) {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            let written = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|mut f| f.write_all(owner.content().as_bytes()));
            return match written {
                Ok(()) => Ok(ip),
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    Err(CniError::host(
                        format!("writing reservation {}", path.display()),
                        e,
                    ))
                }
            };
        }
        Err(CniError::new(
            Code::PodCidrExhausted,
            format!(
                "no free IP in podCIDR {cidr} (gateway {}): all addresses are reserved in {}",
                cidr.gateway,
                self.dir.display()
            ),
        ))
    }

    fn find_locked(&self, owner: &Owner) -> Result<Option<IpAddr>, CniError> {
        let content = owner.content();
        for ip in self.reserved()? {
            match fs::read_to_string(self.dir.join(ip.to_string())) {
                Ok(text) if text == content => return Ok(Some(ip)),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CniError::host(format!("reading reservation of {ip}"), e));
                }
            }
        }
        Ok(None)
    }

    /// The address reserved for `owner`, if any.
    pub fn find(&self, owner: &Owner) -> Result<Option<IpAddr>, CniError> {
        if !self.dir.exists() {
            return Ok(None);
        }
        let _lock = self.lock()?;
        self.find_locked(owner)
    }

    /// Drop `owner`'s reservation; releasing nothing is not an error (DEL is idempotent).
    pub fn release(&self, owner: &Owner) -> Result<Option<IpAddr>, CniError> {
        if !self.dir.exists() {
            return Ok(None);
        }
        let _lock = self.lock()?;
        let Some(ip) = self.find_locked(owner)? else {
            return Ok(None);
        };
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(Some(ip)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::host(
                format!("removing reservation {}", path.display()),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetConf;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("oe-cni-store-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn cidr(text: &str) -> PodSubnet {
        let conf = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"t","podCIDR":"{text}"}}"#);
        NetConf::parse(conf.as_bytes()).unwrap().pod_cidr
    }

    fn owner(id: &str) -> Owner<'_> {
        Owner {
            container_id: id,
            ifname: "eth0",
        }
    }

    #[test]
    fn allocates_lowest_free_after_gateway_and_reuses_released() {
        let dir = TempDir::new("lowest");
        let store = Store::new(&dir.0);
        let c = cidr("10.244.1.0/24");
        assert_eq!(
            store.allocate(&c, &owner("a")).unwrap().to_string(),
            "10.244.1.2"
        );
        assert_eq!(
            store.allocate(&c, &owner("b")).unwrap().to_string(),
            "10.244.1.3"
        );
        assert_eq!(
            store.release(&owner("a")).unwrap().unwrap().to_string(),
            "10.244.1.2"
        );
        assert_eq!(store.release(&owner("a")).unwrap(), None);
        assert_eq!(
            store.find(&owner("b")).unwrap().unwrap().to_string(),
            "10.244.1.3"
        );
        assert_eq!(
            store.allocate(&c, &owner("c")).unwrap().to_string(),
            "10.244.1.2"
        );
    }

    #[test]
    fn exhausted_cidr_is_reported_with_its_code_and_the_cidr() {
        let dir = TempDir::new("exhaust");
        let store = Store::new(&dir.0);
        let c = cidr("10.0.0.0/30");
        assert_eq!(
            store.allocate(&c, &owner("a")).unwrap().to_string(),
            "10.0.0.2"
        );
        let err = store.allocate(&c, &owner("b")).unwrap_err();
        assert_eq!(err.code, Code::PodCidrExhausted);
        assert!(err.msg.contains("10.0.0.0/30"), "{}", err.msg);
        // The failed attempt left no file behind.
        let files = fs::read_dir(&dir.0).unwrap().count();
        assert_eq!(files, 2, "lock + one reservation");
    }

    #[test]
    fn a_second_reservation_for_one_container_interface_is_refused() {
        let dir = TempDir::new("dup");
        let store = Store::new(&dir.0);
        let c = cidr("10.0.0.0/24");
        store.allocate(&c, &owner("a")).unwrap();
        assert!(
            store
                .allocate(&c, &owner("a"))
                .unwrap_err()
                .msg
                .contains("already holds")
        );
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let dir = TempDir::new("race");
        let c = cidr("10.0.0.0/24");
        let ids: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
        let ips: Vec<IpAddr> = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    let dir = &dir.0;
                    s.spawn(move || Store::new(dir).allocate(&c, &owner(id)).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let unique: HashSet<_> = ips.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ips:?}");
    }

    #[test]
    fn ipv6_allocation_starts_after_the_gateway() {
        let dir = TempDir::new("v6");
        let store = Store::new(&dir.0);
        let c = cidr("fd00:1::/120");
        assert_eq!(
            store.allocate(&c, &owner("a")).unwrap().to_string(),
            "fd00:1::2"
        );
    }
}
