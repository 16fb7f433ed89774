//! Which Nodes count as alive for placement, from what the SWIM membership reported and when.
//! Pure: every input carries its `Instant`; nothing here reads a clock or does I/O.
//!
//! A Node is alive for placement while
//! - it is up in the membership, or
//! - it was never heard from since this agent started (or since the Node appeared) and the
//!   join grace has not passed (a starting agent does not grab every IP before it has heard
//!   from its peers), or
//! - it was declared down less than the lease bound ago: its egress IPs stay where they are
//!   until the kernel of the old holder has certainly removed them (the address's valid
//!   lifetime, renewed by that agent while it ran, plus the kernel's check interval). Every
//!   agent applies the same rule, so the next holder takes over only after the old holder's
//!   lease has run out.
//!
//! A Node that left on purpose (its agent said goodbye on SIGTERM, see the membership's
//! hand-over) is not alive at once: it keeps its IPs until the next holder has announced them,
//! so nobody needs to wait for its lease. It counts as neither up nor isolated-from: a Node whose
//! peers all left is alone, not cut off.
//!
//! This Node counts itself alive while it has a valid key and is not isolated: in a cluster of
//! three or more Nodes, an agent that sees no other Node up is starting (it joins within a few
//! milliseconds), cut off (its link, its key) or the last one standing, and claims no IP rather
//! than hold one beside a successor the others chose. (With three Nodes that is a majority rule; larger
//! partitions are not covered. With two Nodes an agent cannot tell a dead peer from its own
//! isolation and keeps its IPs.) An agent without a key claims nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What this agent knows of one other Node.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Peer {
    /// Not heard from since `since` (this agent's start or the Node's appearance).
    Unknown {
        since: Instant,
    },
    Up {
        boot: u64,
    },
    Down {
        boot: u64,
        since: Instant,
    },
    /// Said goodbye (boot `boot`): out of placement at once, no lease to wait for.
    Left {
        boot: u64,
    },
}

/// How many other Nodes are in each state, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberCounts {
    /// Up, and not suspected by SWIM.
    pub alive: u64,
    /// Up, but SWIM suspects it (a probe failed); still alive for placement.
    pub suspect: u64,
    /// Declared down, or not heard from since this agent started (or since the Node appeared).
    pub down: u64,
    /// Said goodbye.
    pub left: u64,
}

/// The liveness of the other Nodes as this agent sees it.
#[derive(Clone, Debug)]
pub struct Liveness {
    me: String,
    /// How long a never-heard-from Node counts as alive.
    grace: Duration,
    /// How long a Node declared down keeps its IPs (its lease bound).
    lease_bound: Duration,
    peers: BTreeMap<String, Peer>,
    last_heard: BTreeMap<String, Instant>,
}

impl Liveness {
    pub fn new(me: &str, grace: Duration, lease_bound: Duration) -> Liveness {
        Liveness {
            me: me.to_string(),
            grace,
            lease_bound,
            peers: BTreeMap::new(),
            last_heard: BTreeMap::new(),
        }
    }

    /// The Nodes of the cluster now: new ones start unknown, deleted ones are forgotten at once.
    pub fn set_nodes<'a>(&mut self, names: impl IntoIterator<Item = &'a str>, now: Instant) {
        let names: BTreeSet<&str> = names.into_iter().filter(|n| *n != self.me).collect();
        self.peers.retain(|name, _| names.contains(name.as_str()));
        self.last_heard
            .retain(|name, _| names.contains(name.as_str()));
        for name in names {
            self.peers
                .entry(name.to_string())
                .or_insert(Peer::Unknown { since: now });
        }
    }

    /// The membership reports `name` (boot `boot`) up.
    pub fn up(&mut self, name: &str, boot: u64, now: Instant) {
        let Some(peer) = self.peers.get_mut(name) else {
            return;
        };
        let newer = match peer {
            Peer::Unknown { .. } => true,
            Peer::Up { boot: b } | Peer::Down { boot: b, .. } => boot >= *b,
            // Only a restarted agent (a new boot) comes back from a goodbye.
            Peer::Left { boot: b } => boot > *b,
        };
        if newer {
            *peer = Peer::Up { boot };
        }
        self.last_heard.insert(name.to_string(), now);
    }

    /// The membership declares `name` (boot `boot`) down; an older boot than the one known up
    /// changes nothing (a restarted agent replaced it).
    pub fn down(&mut self, name: &str, boot: u64, now: Instant) {
        let Some(peer) = self.peers.get_mut(name) else {
            return;
        };
        match peer {
            Peer::Up { boot: b } if boot >= *b => *peer = Peer::Down { boot, since: now },
            Peer::Unknown { .. } => *peer = Peer::Down { boot, since: now },
            // Its goodbye already took it out (foca's own leave arrives as a down).
            _ => {}
        }
    }

    /// `name` (boot `boot`) said goodbye: it leaves placement at once. An older boot than the
    /// one known changes nothing.
    pub fn left(&mut self, name: &str, boot: u64) {
        let Some(peer) = self.peers.get_mut(name) else {
            return;
        };
        let known = match peer {
            Peer::Unknown { .. } => 0,
            Peer::Up { boot: b } | Peer::Down { boot: b, .. } | Peer::Left { boot: b } => *b,
        };
        if boot >= known {
            *peer = Peer::Left { boot };
        }
    }

    /// The Nodes that said goodbye (they can still say themselves that they gave up an IP).
    pub fn gone(&self) -> BTreeSet<String> {
        self.peers
            .iter()
            .filter(|(_, p)| matches!(p, Peer::Left { .. }))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// An authentic datagram from `name` arrived.
    pub fn heard(&mut self, name: &str, now: Instant) {
        if self.peers.contains_key(name) {
            self.last_heard.insert(name.to_string(), now);
        }
    }

    /// Whether `name` is one of the Nodes this agent tracks.
    pub fn knows(&self, name: &str) -> bool {
        self.peers.contains_key(name)
    }

    pub fn last_heard(&self, name: &str) -> Option<Instant> {
        self.last_heard.get(name).copied()
    }

    /// The other Nodes by state; `suspect` tells which of the up ones SWIM suspects.
    pub fn counts(&self, suspect: impl Fn(&str) -> bool) -> MemberCounts {
        let mut counts = MemberCounts::default();
        for (name, peer) in &self.peers {
            match peer {
                Peer::Up { .. } if suspect(name) => counts.suspect += 1,
                Peer::Up { .. } => counts.alive += 1,
                Peer::Unknown { .. } | Peer::Down { .. } => counts.down += 1,
                Peer::Left { .. } => counts.left += 1,
            }
        }
        counts
    }

    /// When the Nodes declared down or gone were last heard from (those never heard from are
    /// left out).
    pub fn silent_since(&self) -> BTreeMap<String, Instant> {
        self.peers
            .iter()
            .filter(|(_, p)| matches!(p, Peer::Down { .. } | Peer::Left { .. }))
            .filter_map(|(name, _)| Some((name.clone(), *self.last_heard.get(name)?)))
            .collect()
    }

    /// Whether `name` is up in the membership (not merely given the benefit of the doubt).
    pub fn is_up(&self, name: &str) -> bool {
        matches!(self.peers.get(name), Some(Peer::Up { .. }))
    }

    /// The Nodes alive for placement at `now`; `me_ok`: this Node may hold IPs.
    pub fn alive(&self, now: Instant, me_ok: bool) -> BTreeSet<String> {
        let mut alive: BTreeSet<String> = self
            .peers
            .iter()
            .filter(|(_, peer)| match peer {
                Peer::Up { .. } => true,
                Peer::Unknown { since } => now < *since + self.grace,
                Peer::Down { since, .. } => now < *since + self.lease_bound,
                Peer::Left { .. } => false,
            })
            .map(|(name, _)| name.clone())
            .collect();
        if me_ok && !self.isolated() {
            alive.insert(self.me.clone());
        }
        alive
    }

    /// Whether this Node hears nobody although there are at least two other Nodes that did not
    /// say goodbye.
    pub fn isolated(&self) -> bool {
        let present = self
            .peers
            .values()
            .filter(|p| !matches!(p, Peer::Left { .. }))
            .count();
        present >= 2 && !self.peers.values().any(|p| matches!(p, Peer::Up { .. }))
    }

    /// The next instant after `now` at which [`Self::alive`] changes by time alone.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|peer| match peer {
                Peer::Up { .. } | Peer::Left { .. } => None,
                Peer::Unknown { since } => Some(*since + self.grace),
                Peer::Down { since, .. } => Some(*since + self.lease_bound),
            })
            .filter(|at| *at > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(3);
    const LEASE: Duration = Duration::from_secs(2);

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn three(now: Instant) -> Liveness {
        let mut live = Liveness::new("a", GRACE, LEASE);
        live.set_nodes(["a", "b", "c"], now);
        live
    }

    #[test]
    fn an_isolated_node_of_three_or_more_counts_itself_out_and_one_of_two_does_not() {
        let t0 = Instant::now();
        let mut live = three(t0);
        live.up("b", 1, t0);
        live.up("c", 1, t0);
        let cut = t0 + Duration::from_secs(10);
        live.down("b", 1, cut);
        assert!(live.alive(cut, true).contains("a"), "c is still up");
        live.down("c", 1, cut);
        assert!(live.isolated());
        assert_eq!(live.alive(cut, true), set(&["b", "c"]));
        // Never heard from anyone (starting, or a wrong key): claims nothing, the others count
        // during their grace.
        let lonely = three(t0);
        assert_eq!(lonely.alive(t0, true), set(&["b", "c"]));
        // Two Nodes: the survivor keeps its IPs.
        let mut pair = Liveness::new("a", GRACE, LEASE);
        pair.set_nodes(["a", "b"], t0);
        pair.up("b", 1, t0);
        pair.down("b", 1, cut);
        assert_eq!(pair.alive(cut + LEASE, true), set(&["a"]));
    }

    #[test]
    fn unknown_nodes_are_alive_during_the_grace_only() {
        let t0 = Instant::now();
        let mut live = three(t0);
        assert_eq!(live.alive(t0, true), set(&["b", "c"]));
        live.up("b", 1, t0 + Duration::from_millis(10));
        assert_eq!(live.alive(t0, true), set(&["a", "b", "c"]));
        assert_eq!(live.next_change(t0), Some(t0 + GRACE));
        assert_eq!(live.alive(t0 + GRACE, true), set(&["a", "b"]));
        assert_eq!(live.next_change(t0 + GRACE), None);
    }

    #[test]
    fn a_node_declared_down_keeps_its_ips_until_its_lease_bound() {
        let t0 = Instant::now();
        let mut live = three(t0);
        live.up("b", 1, t0);
        live.up("c", 1, t0);
        let down = t0 + Duration::from_secs(10);
        live.down("b", 1, down);
        assert!(
            live.alive(down + LEASE - Duration::from_millis(1), true)
                .contains("b")
        );
        assert_eq!(live.next_change(down), Some(down + LEASE));
        assert_eq!(live.alive(down + LEASE, true), set(&["a", "c"]));
        // It comes back with a new boot: alive at once.
        live.up("b", 2, down + LEASE + Duration::from_secs(1));
        assert!(live.is_up("b"));
        assert_eq!(live.alive(down + LEASE * 2, true), set(&["a", "b", "c"]));
    }

    #[test]
    fn a_stale_down_of_an_older_boot_is_ignored() {
        let t0 = Instant::now();
        let mut live = three(t0);
        live.up("b", 5, t0);
        live.down("b", 4, t0);
        assert!(live.is_up("b"));
    }

    #[test]
    fn deleted_nodes_leave_at_once_and_unknown_names_are_ignored() {
        let t0 = Instant::now();
        let mut live = three(t0);
        live.up("b", 1, t0);
        live.up("zzz", 1, t0);
        live.set_nodes(["a", "c"], t0);
        assert_eq!(live.alive(t0, true), set(&["a", "c"]));
        assert_eq!(live.last_heard("b"), None);
    }

    #[test]
    fn without_a_key_this_node_is_not_alive() {
        let t0 = Instant::now();
        let live = three(t0);
        assert_eq!(live.alive(t0, false), set(&["b", "c"]));
    }

    #[test]
    fn a_node_that_said_goodbye_leaves_placement_at_once_and_comes_back_only_with_a_new_boot() {
        let t0 = Instant::now();
        let mut live = three(t0);
        live.up("b", 1, t0);
        live.up("c", 1, t0);
        live.left("b", 1);
        assert_eq!(
            live.alive(t0, true),
            set(&["a", "c"]),
            "no lease to wait for"
        );
        assert_eq!(live.gone(), set(&["b"]));
        // foca's own leave arrives as a down, and a stale up of the same boot: still gone.
        live.down("b", 1, t0);
        live.up("b", 1, t0);
        assert_eq!(live.alive(t0, true), set(&["a", "c"]));
        assert_eq!(live.next_change(t0), None);
        // A goodbye of an older boot than the one up changes nothing.
        live.up("c", 3, t0);
        live.left("c", 2);
        assert!(live.is_up("c"));
        // The restarted agent (new boot) is up again.
        live.up("b", 2, t0);
        assert_eq!(live.alive(t0, true), set(&["a", "b", "c"]));
        assert!(live.gone().is_empty());
    }

    #[test]
    fn members_are_counted_by_state_with_never_heard_from_ones_as_down() {
        let t0 = Instant::now();
        let mut live = Liveness::new("a", GRACE, LEASE);
        live.set_nodes(["a", "b", "c", "d", "e", "f"], t0);
        live.up("b", 1, t0);
        live.up("c", 1, t0);
        live.down("d", 1, t0);
        live.left("e", 1);
        let counts = live.counts(|name| name == "c");
        assert_eq!(
            counts,
            MemberCounts {
                alive: 1,
                suspect: 1,
                down: 2,
                left: 1
            }
        );
        // A Node declared down is counted down even while it keeps its IPs for placement.
        assert!(live.alive(t0, true).contains("d"));
        // Those down or gone that were heard from, with when.
        let heard = t0 + Duration::from_millis(5);
        live.heard("d", heard);
        live.heard("b", heard);
        assert_eq!(
            live.silent_since(),
            BTreeMap::from([("d".to_string(), heard)])
        );
    }

    #[test]
    fn a_node_whose_peers_all_left_is_alone_not_cut_off() {
        let t0 = Instant::now();
        let mut live = three(t0);
        live.up("b", 1, t0);
        live.up("c", 1, t0);
        live.left("b", 1);
        live.left("c", 1);
        assert!(!live.isolated());
        assert_eq!(live.alive(t0, true), set(&["a"]));
        // One left, one down: one present peer is not enough to call it isolated either.
        let mut live = three(t0);
        live.up("b", 1, t0);
        live.left("c", 1);
        live.down("b", 1, t0);
        assert!(!live.isolated());
    }

    #[test]
    fn a_node_never_heard_from_can_be_declared_down() {
        let t0 = Instant::now();
        let mut live = three(t0);
        live.up("b", 1, t0);
        live.down("c", 1, t0);
        assert_eq!(live.alive(t0 + LEASE, true), set(&["a", "b"]));
        live.heard("b", t0);
        assert_eq!(live.last_heard("b"), Some(t0));
    }
}
