//! The Admin API's query parameters, shared by its HTTP and gRPC front doors: dates are UTC
//! `YYYY-MM-DD`, ranges are [start, end), and every bad parameter is named in the error.

use chrono::NaiveDate;
use switchyard_actors::budget::CostQuery;
use switchyard_actors::cache::Invalidation;
use switchyard_actors::error::GatewayError;

/// Rows returned by cost-by-user when no limit is given.
pub const DEFAULT_LIMIT: usize = 10;

/// Today on the budget clock.
fn today() -> NaiveDate {
    switchyard_actors::budget::period::date_of(switchyard_actors::budget::period::now_ms())
}

/// Parses the date parameter `name`; absent or empty means `default`.
pub fn date(name: &str, text: Option<&str>, default: NaiveDate) -> Result<NaiveDate, GatewayError> {
    match text.filter(|text| !text.is_empty()) {
        None => Ok(default),
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| GatewayError::invalid(name, format!("\"{text}\" is not a date like 2026-11-22"))),
    }
}

/// `get_daily_cost` of `date` (default today).
pub fn daily(date_text: Option<&str>) -> Result<CostQuery, GatewayError> {
    Ok(CostQuery::Daily(date("date", date_text, today())?))
}

/// [start, end): start defaults to today, end to the day after start.
pub fn range(start: Option<&str>, end: Option<&str>) -> Result<(NaiveDate, NaiveDate), GatewayError> {
    let start = date("start", start, today())?;
    let end = date("end", end, start.succ_opt().unwrap_or(start))?;
    if end <= start {
        return Err(GatewayError::invalid("end", "must be after start (the range is [start, end))"));
    }
    Ok((start, end))
}

/// `check_budget` of one user.
pub fn budget(tenant: Option<&str>, user: Option<&str>) -> Result<CostQuery, GatewayError> {
    match (tenant.filter(|t| !t.is_empty()), user.filter(|u| !u.is_empty())) {
        (Some(tenant), Some(user)) => Ok(CostQuery::Budget { tenant: tenant.to_owned(), user: user.to_owned() }),
        (None, _) => Err(GatewayError::invalid("tenant", "is required")),
        (_, None) => Err(GatewayError::invalid("user", "is required")),
    }
}

/// Which cache entries to drop: exactly one of a key (as in `x-switchyard-cache-key`), a tenant,
/// a model or route, or everything.
pub fn invalidation(key: Option<&str>, tenant: Option<&str>, model: Option<&str>, all: bool) -> Result<Invalidation, GatewayError> {
    let given = [key.is_some(), tenant.is_some(), model.is_some(), all].iter().filter(|given| **given).count();
    if given != 1 {
        return Err(GatewayError::invalid("body", "give exactly one of key, tenant, model, or all = true"));
    }
    let non_empty = |field: &str, value: &str| {
        if value.is_empty() { Err(GatewayError::invalid(field, "must not be empty")) } else { Ok(value.to_owned()) }
    };
    Ok(match (key, tenant, model) {
        (Some(key), _, _) => Invalidation::Key(non_empty("key", key)?),
        (_, Some(tenant), _) => Invalidation::Tenant(non_empty("tenant", tenant)?),
        (_, _, Some(model)) => Invalidation::Model(non_empty("model", model)?),
        _ => Invalidation::All,
    })
}
