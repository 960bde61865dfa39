//! Checks of single request fields shared by the handlers: lengths, URLs, dates.
use chrono::NaiveDate;

use crate::error::ApiError;

/// Length in Unicode scalar values (what API.md means by "chars").
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

const MAX_URL: usize = 2048;

/// An absolute http(s) URL with a host, no blanks or control characters, at most 2048 bytes.
pub fn is_http_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        &s[7..]
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    s.len() <= MAX_URL
        && !host.is_empty()
        && !host.starts_with(':')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A calendar date exactly as API.md writes them, `YYYY-MM-DD` (years 0000-9999). chrono alone
/// would also take `+262142-12-31`, chrono's last day, where a day's arithmetic overflows.
pub fn date(value: &str) -> Option<NaiveDate> {
    let b = value.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shaped {
        return None;
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()
}

/// A `YYYY-MM-DD` date, or a 422 naming the field.
pub fn parse_date(field: &'static str, value: &str) -> Result<NaiveDate, ApiError> {
    date(value).ok_or_else(|| ApiError::invalid_field(field, "a date YYYY-MM-DD"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "http://a.b",
            "https://shop.example:8443/x?y#z",
            "HTTPS://X.COM",
        ] {
            assert!(is_http_url(ok), "{ok}");
        }
        let long = format!("https://a.com/{}", "x".repeat(2040));
        for bad in [
            "ftp://a.b",
            "https://",
            "http:///path",
            "https://a b.com",
            "javascript:alert(1)",
            "/relative",
            &long,
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn dates_are_yyyy_mm_dd() {
        assert!(date("2026-12-01").is_some());
        assert!(date("9999-12-31").is_some());
        for bad in [
            "+262142-12-31",
            "-262143-01-01",
            "2026-1-01",
            "2026-13-01",
            "20261201",
            "२०२६-१२-०१",
        ] {
            assert!(date(bad).is_none(), "{bad}");
        }
    }
}
