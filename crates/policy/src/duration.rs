//! Go-style duration strings (`24h`, `90m`, `1h30m`, `45s`), the form `RotationPolicy` uses and
//! the API server's CEL `duration()` understands. Only the units `h`, `m` and `s` are accepted,
//! as the CRD's CEL rules allow.

use std::time::Duration;

/// A duration string that is not of the form the CRD accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration such as 24h, 90m or 1h30m (units h, m, s)")]
pub struct DurationError {
    pub input: String,
}

/// Parses `1h30m`, `45s`, ... into a [`Duration`].
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        input: input.to_string(),
    };
    if input.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut digits: Option<u64> = None;
    for c in input.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = digits.unwrap_or(0);
            digits = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(err)?,
            );
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(err()),
        };
        let n = digits.take().ok_or_else(err)?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    if digits.is_some() {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_minutes_and_seconds_add_up() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("2m5s"), Ok(Duration::from_secs(125)));
    }

    #[test]
    fn strings_without_units_or_with_other_units_are_refused_with_an_example() {
        for bad in ["", "10", "h", "1d", "1.5h", "-1h", "1h30"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains("1h30m"), "{err}");
        }
    }
}
