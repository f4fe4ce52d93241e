//! Open-file budget: every client connection is one descriptor here.

use crate::error::BenchError;

/// Descriptors the process needs besides its connections.
const RESERVE: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns it.
pub fn raise() -> Result<u64, BenchError> {
    rlimit::increase_nofile_limit(u64::MAX).map_err(BenchError::FileLimit)
}

/// Fails clearly when `connections` cannot fit under `limit`.
pub fn ensure(connections: usize, limit: u64) -> Result<(), BenchError> {
    let needed = connections as u64 + RESERVE;
    if needed > limit {
        Err(BenchError::TooManyFiles { needed, limit })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_a_reserve() {
        assert!(ensure(19_900, 20_000).is_ok());
        assert!(matches!(
            ensure(19_990, 20_000),
            Err(BenchError::TooManyFiles {
                needed: 20_054,
                limit: 20_000
            })
        ));
    }

    #[test]
    fn raising_reaches_at_least_the_old_soft_limit() {
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert!(raise().unwrap() >= soft);
    }
}
