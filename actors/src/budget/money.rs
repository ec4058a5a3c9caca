//! Money as whole nanodollars, so sums of many small costs stay exact.

use std::fmt;

/// An amount in US dollars, held as nanodollars (1e-9 USD). Integer arithmetic: adding a million
/// requests' costs gives the same total in any order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct NanoUsd(pub i64);

impl NanoUsd {
    /// Zero dollars.
    pub const ZERO: Self = Self(0);

    /// The nearest amount to `usd` dollars.
    pub fn from_usd(usd: f64) -> Self {
        Self((usd * 1e9).round() as i64)
    }

    /// The amount in dollars, for display and JSON.
    pub fn as_usd(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// Sum, saturating at the bounds.
    pub fn plus(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// Difference, saturating at the bounds.
    pub fn minus(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for NanoUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.6}", self.as_usd())
    }
}

impl std::iter::Sum for NanoUsd {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Self::plus)
    }
}
