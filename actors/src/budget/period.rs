//! Budget periods in UTC: a day or a calendar month, each named by a key that changes exactly at
//! the period's boundary. Spend is counted per (scope, period key), so a new period starts a new
//! counter and never overwrites the old one.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone as _, Utc};

/// A budget period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// A UTC calendar day.
    Daily,
    /// A UTC calendar month.
    Monthly,
}

impl Period {
    /// The config and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Monthly => "monthly",
        }
    }

    /// The key of the period containing `unix_ms`: `2026-11-22` or `2026-11`. Every
    /// reservation asks for one key per budget line, so each thread keeps the keys of the last
    /// day it was asked about and formats them only when the day changes (the date conversion and
    /// formatting showed in profiles of the request path).
    pub fn key(self, unix_ms: i64) -> String {
        let day = unix_ms.div_euclid(DAY_MS);
        LAST_DAY_KEYS.with_borrow_mut(|last| {
            let keys = match last {
                Some(keys) if keys.day == day => keys,
                _ => last.insert(DayKeys::of(day)),
            };
            match self {
                Self::Daily => keys.daily.clone(),
                Self::Monthly => keys.monthly.clone(),
            }
        })
    }

    /// When the period containing `unix_ms` ends (the next one starts).
    pub fn resets_at(self, unix_ms: i64) -> DateTime<Utc> {
        let date = date_of(unix_ms);
        let next = match self {
            Self::Daily => date.succ_opt(),
            Self::Monthly => {
                let (year, month) = if date.month() == 12 { (date.year() + 1, 1) } else { (date.year(), date.month() + 1) };
                NaiveDate::from_ymd_opt(year, month, 1)
            }
        };
        let midnight = next.and_then(|next| next.and_hms_opt(0, 0, 0)).map(|naive| Utc.from_utc_datetime(&naive));
        midnight.unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Milliseconds in a UTC day (no leap seconds in Unix time).
const DAY_MS: i64 = 86_400_000;

/// The period keys of one UTC day.
struct DayKeys {
    /// Days since the epoch.
    day: i64,
    daily: String,
    monthly: String,
}

impl DayKeys {
    fn of(day: i64) -> Self {
        let date = date_of(day.saturating_mul(DAY_MS));
        Self {
            day,
            daily: format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()),
            monthly: format!("{:04}-{:02}", date.year(), date.month()),
        }
    }
}

thread_local! {
    /// The keys of the day this thread last asked about.
    static LAST_DAY_KEYS: std::cell::RefCell<Option<DayKeys>> = const { std::cell::RefCell::new(None) };
}

/// The UTC date of `unix_ms`.
pub fn date_of(unix_ms: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(unix_ms).unwrap_or(DateTime::<Utc>::MIN_UTC).date_naive()
}

/// Milliseconds since the Unix epoch at the start of `date` (UTC).
pub fn midnight_ms(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0).map_or(i64::MIN, |naive| Utc.from_utc_datetime(&naive).timestamp_millis())
}

/// The budget clock's shift, set once at start (`tenancy.budget_clock_offset_ms`).
static CLOCK_OFFSET_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

/// Shifts the budget clock by `offset_ms` for the rest of the process (a rehearsal of a period's
/// end); the first call wins. Returns false if it was already set to another value.
pub fn set_clock_offset_ms(offset_ms: i64) -> bool {
    *CLOCK_OFFSET_MS.get_or_init(|| offset_ms) == offset_ms
}

/// Milliseconds since the Unix epoch, now, on the budget clock.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis() + CLOCK_OFFSET_MS.get().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keys_and_resets_at_day_and_month_ends() {
        let last_ms_of_2026 = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).single().map(|t| t.timestamp_millis() + 999);
        let last = last_ms_of_2026.unwrap_or_default();
        assert_eq!(Period::Daily.key(last), "2026-12-31");
        assert_eq!(Period::Daily.key(last + 1), "2027-01-01");
        assert_eq!(Period::Monthly.key(last), "2026-12");
        assert_eq!(Period::Monthly.key(last + 1), "2027-01");
        assert_eq!(Period::Monthly.resets_at(last).timestamp_millis(), last + 1);
        let leap = Utc.with_ymd_and_hms(2028, 2, 29, 12, 0, 0).single().map(|t| t.timestamp_millis()).unwrap_or_default();
        assert_eq!(Period::Monthly.resets_at(leap).format("%Y-%m-%d").to_string(), "2028-03-01");
    }

    proptest! {
        #[test]
        fn the_key_changes_exactly_at_the_reset(unix_ms in 0i64..4_102_444_800_000, monthly in any::<bool>()) {
            let period = if monthly { Period::Monthly } else { Period::Daily };
            let reset = period.resets_at(unix_ms).timestamp_millis();
            prop_assert!(reset > unix_ms);
            prop_assert_eq!(period.key(reset - 1), period.key(unix_ms));
            prop_assert_ne!(period.key(reset), period.key(unix_ms));
        }
    }
}
