//! SNAT marks: one 8-bit mark (1..=255) per egress IP held by this Node. Marks are stable: an IP
//! that stays local keeps the mark it had in the previous plan; a new IP takes the lowest free
//! mark. Pure; it must never hand one mark to two IPs.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// The lowest mark; 0 means "no mark" in the datapath.
pub const MIN_MARK: u8 = 1;
/// The highest mark: marks live in the low 8 bits of the packet mark.
pub const MAX_MARK: u8 = 255;

/// Marks for `local_ips` (in priority order: earlier IPs get a mark first when marks run out).
/// IPs with a mark in `previous` keep it; the others take the lowest free marks in order. An IP
/// missing from the result found no free mark.
pub fn assign(local_ips: &[IpAddr], previous: &BTreeMap<IpAddr, u8>) -> BTreeMap<IpAddr, u8> {
    let mut used = [false; MAX_MARK as usize + 1];
    let mut marks = BTreeMap::new();
    for ip in local_ips {
        if let Some(&mark) = previous.get(ip)
            && mark >= MIN_MARK
            && !used[usize::from(mark)]
        {
            used[usize::from(mark)] = true;
            marks.insert(*ip, mark);
        }
    }
    let mut free = (MIN_MARK..=MAX_MARK).filter(|m| !used[usize::from(*m)]);
    for ip in local_ips {
        if marks.contains_key(ip) {
            continue;
        }
        match free.next() {
            Some(mark) => {
                marks.insert(*ip, mark);
            }
            None => break,
        }
    }
    marks
}
