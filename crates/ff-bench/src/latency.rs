//! Latency figures: durations are recorded in microseconds and reported in milliseconds.

use std::time::Duration;

use anyhow::Result;
use hdrhistogram::Histogram;

/// A histogram of durations.
pub struct Latency(Histogram<u64>);

impl Latency {
    /// An empty histogram (three significant figures).
    pub fn new() -> Result<Self> {
        Ok(Self(Histogram::new(3)?))
    }

    /// Records one duration (at least 1 µs, so that a zero still counts).
    pub fn record(&mut self, d: Duration) -> Result<()> {
        self.0.record((d.as_micros() as u64).max(1))?;
        Ok(())
    }

    /// Adds every duration `other` recorded.
    pub fn merge(&mut self, other: &Latency) -> Result<()> {
        self.0.add(&other.0)?;
        Ok(())
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0..=1), in ms.
    pub fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest value, in ms.
    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }

    /// `p50 a ms, p90 b ms, p99 c ms, max d ms`.
    pub fn summary(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            self.ms(0.50),
            self.ms(0.90),
            self.ms(0.99),
            self.max_ms(),
            self.count()
        )
    }
}
