//! The family calendar: per day (in the server's time zone), missions due, missions approved and
//! gifts given.
use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};

use super::fields::parse_date;
use super::identity::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::status::{MissionStatus, WishStatus};
use crate::store::entities::{family, mission, wish};

/// The longest range one request may cover, counting both ends.
const MAX_DAYS: i64 = 366;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/calendar", web::get().to(calendar));
}

// Optional in the code so that a missing one is a 422; both required on the wire.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Range {
    /// The first day.
    #[param(value_type = NaiveDate, required = true)]
    from: Option<String>,
    /// The last day: on or after `from`, at most 366 days counting both ends.
    #[param(value_type = NaiveDate, required = true)]
    to: Option<String>,
}

/// One day in the server's time zone (`PODO_TIMEZONE`).
#[derive(Serialize, Default, utoipa::ToSchema)]
struct Day {
    date: NaiveDate,
    /// Ids of missions due that day.
    missions_due: Vec<i64>,
    /// Ids of missions approved that day.
    missions_approved: Vec<i64>,
    /// Ids of wishes given that day.
    gifts_given: Vec<i64>,
}

/// The `GET /api/calendar` body.
#[derive(Serialize, utoipa::ToSchema)]
struct Calendar {
    /// Only days that have entries, ascending.
    days: Vec<Day>,
    /// The IANA time zone the days are counted in (`PODO_TIMEZONE`), so that a client anywhere
    /// knows which day is "today" for the family.
    #[schema(example = "Asia/Seoul")]
    time_zone: String,
}

fn day(days: &mut BTreeMap<NaiveDate, Day>, date: NaiveDate) -> &mut Day {
    days.entry(date).or_insert_with(|| Day {
        date,
        ..Day::default()
    })
}

/// The first instant of `date` in `tz`, in UTC (the earliest one if the day starts in a gap).
fn start_of(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight)
        .earliest()
        .map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc))
}

/// A checked range: its first and last day, and the instants it covers in `tz` (`start..end`).
struct Days {
    from: NaiveDate,
    to: NaiveDate,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

fn check_range(range: &Range, tz: Tz) -> Result<Days, ApiError> {
    let from = parse_date("from", range.from.as_deref().unwrap_or_default())?;
    let to = parse_date("to", range.to.as_deref().unwrap_or_default())?;
    if from > to {
        return Err(ApiError::invalid_field("to", "on or after from"));
    }
    if (to - from).num_days() + 1 > MAX_DAYS {
        return Err(ApiError::invalid_field(
            "to",
            "at most 366 days after from, counting both ends",
        ));
    }
    // `to` is at most 9999-12-31 (parse_date), so the next day exists; checked all the same.
    let after = to
        .succ_opt()
        .ok_or_else(|| ApiError::invalid_field("to", "a date YYYY-MM-DD"))?;
    Ok(Days {
        from,
        to,
        start: start_of(tz, from),
        end: start_of(tz, after),
    })
}

#[utoipa::path(
    get,
    path = "/api/calendar",
    tag = "calendar",
    operation_id = "calendar",
    summary = "Missions due, missions approved and gifts given, by day",
    security(("bearer" = [])),
    params(Range),
    responses(
        (status = 200, description = "Missions due, missions approved and gifts given, by day", body = Calendar),
        (status = 403, description = "`not_in_family`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `from` or `to` missing or not a date, `to` before `from`, or more than 366 days", body = ErrorBody),
    )
)]
async fn calendar(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let family_id = member.family()?;
    let tz = state.timezone;
    let Days {
        from,
        to,
        start,
        end,
    } = check_range(&range, tz)?;
    let local_day = |at: DateTime<Utc>| at.with_timezone(&tz).date_naive();
    let mut days: BTreeMap<NaiveDate, Day> = BTreeMap::new();

    let missions = mission::Entity::find()
        .filter(mission::Column::FamilyId.eq(family_id))
        .all(&state.db.read)
        .await?;
    for m in &missions {
        if let Some(due) = m.due_on.filter(|d| (from..=to).contains(d)) {
            day(&mut days, due).missions_due.push(m.id);
        }
        if let Some(at) = m
            .decided_at
            .filter(|at| m.status == MissionStatus::Approved && (start..end).contains(at))
        {
            day(&mut days, local_day(at)).missions_approved.push(m.id);
        }
    }
    if let Some(family) = family::Entity::find_by_id(family_id)
        .one(&state.db.read)
        .await?
    {
        let given = wish::Entity::find()
            .filter(wish::Column::ChildId.eq(family.child_id))
            .filter(wish::Column::Status.eq(WishStatus::Given))
            .all(&state.db.read)
            .await?;
        for w in given {
            if let Some(at) = w.given_at.filter(|at| (start..end).contains(at)) {
                day(&mut days, local_day(at)).gifts_given.push(w.id);
            }
        }
    }
    let days: Vec<Day> = days
        .into_values()
        .map(|mut d| {
            d.missions_due.sort_unstable();
            d.missions_approved.sort_unstable();
            d.gifts_given.sort_unstable();
            d
        })
        .collect();
    Ok(HttpResponse::Ok().json(Calendar {
        days,
        time_zone: tz.name().to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fuzz;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ranges_are_checked_or_refused(query in fuzz::query(&["from", "to"])) {
            let tz: Tz = "Asia/Seoul".parse().expect("a known zone");
            match fuzz::parse_query::<Range>(&query).and_then(|r| check_range(&r, tz)) {
                Ok(days) => {
                    prop_assert!(days.from <= days.to && days.start < days.end);
                    prop_assert!((days.to - days.from).num_days() < MAX_DAYS);
                }
                Err(err) => fuzz::assert_refusal(&err)?,
            }
        }

        #[test]
        fn any_two_dates_are_checked_or_refused(
            from in "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            to in "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        ) {
            for tz in [chrono_tz::Asia::Seoul, chrono_tz::Pacific::Kiritimati, chrono_tz::Etc::GMTPlus12] {
                let range = Range { from: Some(from.clone()), to: Some(to.clone()) };
                fuzz::accepted_or_refused(check_range(&range, tz))?;
            }
        }
    }

    #[test]
    fn the_ends_of_the_calendar() {
        let tz: Tz = "Asia/Seoul".parse().expect("a known zone");
        let range = |from: &str, to: &str| Range {
            from: Some(from.into()),
            to: Some(to.into()),
        };
        assert!(check_range(&range("9999-12-31", "9999-12-31"), tz).is_ok());
        assert!(check_range(&range("0000-01-01", "0000-01-01"), tz).is_ok());
        assert!(check_range(&range("+262142-12-31", "+262142-12-31"), tz).is_err());
    }

    #[test]
    fn seoul_days_start_at_15_utc_the_day_before() {
        let tz: Tz = "Asia/Seoul".parse().expect("a known zone");
        let date = NaiveDate::from_ymd_opt(2026, 12, 2).expect("a real date");
        assert_eq!(start_of(tz, date).to_rfc3339(), "2026-12-01T15:00:00+00:00");
    }
}
