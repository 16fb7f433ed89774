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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn new_ips_take_the_lowest_free_marks_in_order() {
        let marks = assign(&[ip(3), ip(1), ip(2)], &BTreeMap::new());
        assert_eq!(marks, BTreeMap::from([(ip(3), 1), (ip(1), 2), (ip(2), 3)]));
    }

    #[test]
    fn ips_keep_their_previous_marks_and_new_ones_fill_gaps() {
        let previous = BTreeMap::from([(ip(1), 1), (ip(2), 2), (ip(3), 3)]);
        // ip(1) is gone, ip(4) is new: it takes the freed mark 1; ip(2), ip(3) keep theirs.
        let marks = assign(&[ip(4), ip(3), ip(2)], &previous);
        assert_eq!(marks, BTreeMap::from([(ip(4), 1), (ip(2), 2), (ip(3), 3)]));
    }

    #[test]
    fn a_mark_is_never_given_twice_even_if_the_previous_plan_was_corrupt() {
        let previous = BTreeMap::from([(ip(1), 7), (ip(2), 7), (ip(3), 0)]);
        let marks = assign(&[ip(1), ip(2), ip(3)], &previous);
        assert_eq!(marks, BTreeMap::from([(ip(1), 7), (ip(2), 1), (ip(3), 2)]));
    }

    #[test]
    fn the_256th_ip_gets_no_mark() {
        let ips: Vec<IpAddr> = (0..256).map(ip).collect();
        let marks = assign(&ips, &BTreeMap::new());
        assert_eq!(marks.len(), 255);
        assert!(!marks.contains_key(&ip(255)));
        assert_eq!(marks.values().min(), Some(&MIN_MARK));
        assert_eq!(marks.values().max(), Some(&MAX_MARK));
    }
}
