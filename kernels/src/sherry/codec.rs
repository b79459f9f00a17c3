//! One block of four weights ⇄ its 5 bits (4-bit index + sign bit), the scalar reference of
//! the format every kernel and the converter build on.

/// Why four weights are not a 3:4 block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// A weight other than −1, 0 or +1.
    NotTernary(i8),
    /// Not exactly one zero (the count found); project the weights onto 3:4 first
    /// (`onebit convert --format sherry` does).
    Zeros(usize),
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotTernary(v) => write!(f, "weight {v} is not ternary (−1, 0 or +1)"),
            Self::Zeros(n) => write!(
                f,
                "{n} zeros where 3:4 sparsity needs exactly one; project the weights onto 3:4 \
                 first (onebit convert --format sherry does)"
            ),
        }
    }
}

impl std::error::Error for BlockError {}

/// The 5 bits of a block: (index, sign bit).
pub fn encode_block(w: [i8; 4]) -> Result<(u8, bool), BlockError> {
    if let Some(&v) = w.iter().find(|v| !(-1..=1).contains(*v)) {
        return Err(BlockError::NotTernary(v));
    }
    let zeros = w.iter().filter(|&&v| v == 0).count();
    if zeros != 1 {
        return Err(BlockError::Zeros(zeros));
    }
    let z = w.iter().position(|&v| v == 0).unwrap_or(0);
    let mut nonzero = w.iter().copied().filter(|&v| v != 0);
    let first = nonzero.next().unwrap_or(1);
    let mut index = z as u8;
    for (bit, v) in nonzero.enumerate() {
        if v != first {
            index |= 1 << (2 + bit);
        }
    }
    Ok((index, first < 0))
}

/// The four weights of a block (the inverse of [`encode_block`]).
pub fn decode_block(index: u8, sign: bool) -> [i8; 4] {
    weights_of(index & 15, sign)
}

/// [`decode_block`] for const tables; `index < 16`.
pub(crate) const fn weights_of(index: u8, sign: bool) -> [i8; 4] {
    let z = (index & 3) as usize;
    let first: i8 = if sign { -1 } else { 1 };
    let mut w = [0i8; 4];
    let mut nth = 0;
    let mut p = 0;
    while p < 4 {
        if p != z {
            let opposite = nth > 0 && (index >> (1 + nth)) & 1 == 1;
            w[p] = if opposite { -first } else { first };
            nth += 1;
        }
        p += 1;
    }
    w
}
