//! The order in which the memory-bound row kernels (decode GEMV, the screen, Sherry's GEMV)
//! visit weight rows: in groups of 4, each group's rows a quarter of the range apart, so that
//! the 4 rows in flight are 4 sequential streams over their own pages, which the hardware
//! prefetchers follow at once (4 adjacent rows are one stream, or 4 short ones that end
//! before the prefetcher has ramped up). Each kernel's doc comment gives its measurement.

use std::ops::Range;

/// How a range of rows is cut into groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Groups of 4 rows a quarter of the range apart.
    Quarters,
    /// Groups of 4 consecutive rows.
    Fours,
    /// One row at a time.
    Ones,
}

/// `count` rows `first + j·stride` (j < count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowGroup {
    pub first: usize,
    pub stride: usize,
    pub count: usize,
}

impl RowGroup {
    /// The group's rows, in order.
    pub fn rows(self) -> impl Iterator<Item = usize> {
        (0..self.count).map(move |j| self.first + j * self.stride)
    }
}

/// `rows` as groups of 4 (`len / 4` of them, none for [`Walk::Ones`]), then the rows left
/// over one at a time; every row appears exactly once.
pub fn groups(rows: Range<usize>, walk: Walk) -> impl Iterator<Item = RowGroup> {
    let fours = if walk == Walk::Ones {
        0
    } else {
        rows.len() / 4
    };
    let stride = if walk == Walk::Quarters { fours } else { 1 };
    let start = rows.start;
    let grouped = (0..fours).map(move |g| RowGroup {
        first: start + if walk == Walk::Quarters { g } else { 4 * g },
        stride,
        count: 4,
    });
    let rest = (start + 4 * fours..rows.end).map(|first| RowGroup {
        first,
        stride: 1,
        count: 1,
    });
    grouped.chain(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_once_in_every_walk() {
        for start in [0, 3, 17] {
            for len in 0..45 {
                for walk in [Walk::Quarters, Walk::Fours, Walk::Ones] {
                    let mut seen: Vec<usize> = groups(start..start + len, walk)
                        .flat_map(RowGroup::rows)
                        .collect();
                    let fours = groups(start..start + len, walk)
                        .filter(|g| g.count == 4)
                        .count();
                    seen.sort_unstable();
                    assert_eq!(
                        seen,
                        (start..start + len).collect::<Vec<_>>(),
                        "{walk:?} {len}"
                    );
                    let want = if walk == Walk::Ones { 0 } else { len / 4 };
                    assert_eq!(fours, want, "{walk:?} {len}");
                }
            }
        }
    }

    #[test]
    fn quarters_are_a_quarter_apart() {
        let g: Vec<RowGroup> = groups(10..23, Walk::Quarters).collect();
        assert_eq!(
            g[..3],
            [0, 1, 2].map(|i| RowGroup {
                first: 10 + i,
                stride: 3,
                count: 4
            })
        );
        assert_eq!(g[3].first, 22);
        assert_eq!(g.len(), 4);
    }
}
