//! Bookkeeping of the address ranges mapped through the emulator, so that a test ends
//! with a list of what was never unmapped.

use std::collections::BTreeMap;

/// Live mappings: start -> (end, description).
#[derive(Default)]
pub(crate) struct MapTable {
    ranges: BTreeMap<usize, (usize, String)>,
}

impl MapTable {
    /// Records `start..start+len`, replacing whatever it overlaps (as MAP_FIXED does).
    pub(crate) fn insert(&mut self, start: usize, len: usize, what: String) {
        self.remove(start, len);
        self.ranges.insert(start, (start + len, what));
    }

    /// Forgets `start..start+len`, splitting ranges that it cuts.
    pub(crate) fn remove(&mut self, start: usize, len: usize) {
        let end = start + len;
        let hit: Vec<usize> = self
            .ranges
            .range(..end)
            .filter(|(_, (e, _))| *e > start)
            .map(|(s, _)| *s)
            .collect();
        for s in hit {
            let (e, what) = self.ranges.remove(&s).expect("key from this map");
            if s < start {
                self.ranges.insert(s, (start, what.clone()));
            }
            if e > end {
                self.ranges.insert(end, (e, what));
            }
        }
    }

    /// Descriptions of what is still mapped.
    pub(crate) fn leaks(&self) -> Vec<String> {
        self.ranges
            .iter()
            .map(|(s, (e, what))| format!("mapping {s:#x}..{e:#x} ({what}) never unmapped"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_trim() {
        let mut t = MapTable::default();
        t.insert(0x1000, 0x4000, "a".into());
        t.remove(0x2000, 0x1000);
        assert_eq!(t.leaks().len(), 2);
        t.remove(0x1000, 0x1000);
        t.remove(0x3000, 0x2000);
        assert!(t.leaks().is_empty());
    }
}
