//! The lead across nodes: at every heartbeat each node writes its members'
//! round trips of each room it serves into `lockstep:reach:{room}` (a hash,
//! one field per node, stamped to expire with the node's presence, in the
//! same script as its count: `lua/count.lua`) and hands the room the other
//! nodes' fresh entries, merged (`crate::room` reach docs). A node that
//! stops beating drops out within the TTL; an older node that does not
//! write one counts with none.

use std::collections::BTreeMap;

use crate::room::NeedCounts;

/// Most (ms, members) pairs one node shares for a room: one per whole
/// millisecond between the lead and its cap (at most 10 s) fits.
const MAX_PAIRS: usize = 10_001;

/// A node's round trips as stored: `ms:members` pairs, comma-separated
/// (empty: none measured).
pub(super) fn encode(counts: &NeedCounts) -> String {
    let pairs: Vec<String> = counts.iter().take(MAX_PAIRS).map(|(ms, n)| format!("{ms}:{n}")).collect();
    pairs.join(",")
}

/// The other nodes' entries (as `count.lua` returns them), merged; a
/// malformed pair is skipped, not the node's other pairs.
pub(super) fn merge(entries: &[String]) -> NeedCounts {
    let mut merged = BTreeMap::<u32, u32>::new();
    for entry in entries {
        for pair in entry.split(',').take(MAX_PAIRS) {
            let Some((ms, n)) = pair.split_once(':') else { continue };
            let (Ok(ms), Ok(n)) = (ms.parse::<u32>(), n.parse::<u32>()) else { continue };
            let slot = merged.entry(ms).or_default();
            *slot = slot.saturating_add(n);
        }
    }
    merged.into_iter().filter(|&(_, n)| n > 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_merge_per_millisecond() {
        assert_eq!(encode(&vec![]), "");
        assert_eq!(encode(&vec![(100, 57), (320, 2)]), "100:57,320:2");
        let merged = merge(&[encode(&vec![(100, 57), (320, 2)]), encode(&vec![(100, 3), (901, 1)]), String::new()]);
        assert_eq!(merged, vec![(100, 60), (320, 2), (901, 1)]);
    }

    #[test]
    fn malformed_pairs_are_skipped_and_the_rest_kept() {
        let merged = merge(&["100:5,x:1,200,300:-1,400:2:1,500:4".to_owned(), ":,,".to_owned()]);
        assert_eq!(merged, vec![(100, 5), (500, 4)]);
        assert_eq!(merge(&[format!("100:{}", u32::MAX), "100:9".to_owned()]), vec![(100, u32::MAX)]);
    }
}
