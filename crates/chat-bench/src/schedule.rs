//! When each publisher fires. Publishers share one period and are staggered
//! evenly across it, so the server sees a steady stream instead of
//! synchronized bursts (which would measure the load generator's queueing).

use std::time::Duration;

/// The interval between two messages of one publisher sending `rate` per second.
pub fn period(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate)
}

/// Start offset of each of `publishers` publishers within one `period`:
/// publisher `i` fires at `i / publishers` of the period.
pub fn offsets(publishers: usize, period: Duration) -> Vec<Duration> {
    let count = u32::try_from(publishers.max(1)).unwrap_or(u32::MAX);
    (0..publishers)
        .map(|i| period * u32::try_from(i).unwrap_or(u32::MAX) / count)
        .collect()
}

/// Global publisher index for publisher `p` of room `room`: consecutive
/// offsets go to different rooms, so no room gets its publishers bunched.
pub fn publisher_slot(room: usize, p: usize, rooms: usize) -> usize {
    p * rooms + room
}

/// Per-publisher rate that yields `deliveries_per_sec` when every message
/// reaches `members` members.
pub fn rate_for_deliveries(
    deliveries_per_sec: f64,
    publishers_total: usize,
    members: usize,
) -> f64 {
    deliveries_per_sec / (publishers_total.max(1) * members.max(1)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_evenly_spread_over_one_period() {
        let offsets = offsets(4, Duration::from_millis(100));
        assert_eq!(
            offsets,
            vec![
                Duration::ZERO,
                Duration::from_millis(25),
                Duration::from_millis(50),
                Duration::from_millis(75)
            ]
        );
    }

    #[test]
    fn offsets_stay_inside_the_period() {
        let period = period(800.0);
        let offsets = offsets(30, period);
        assert_eq!(offsets.len(), 30);
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        assert!(offsets.iter().all(|o| *o < period));
    }

    #[test]
    fn slots_interleave_rooms() {
        let slots: Vec<usize> = (0..2)
            .flat_map(|p| (0..3).map(move |room| publisher_slot(room, p, 3)))
            .collect();
        assert_eq!(slots, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(publisher_slot(2, 0, 3), 2);
        assert_eq!(publisher_slot(0, 1, 3), 3);
    }

    #[test]
    fn rate_from_deliveries() {
        // 10 rooms x 1 publisher x 100 members at 500 msg/s = 500,000 deliveries/s.
        assert!((rate_for_deliveries(500_000.0, 10, 100) - 500.0).abs() < 1e-9);
        assert_eq!(period(4.0), Duration::from_millis(250));
    }
}
