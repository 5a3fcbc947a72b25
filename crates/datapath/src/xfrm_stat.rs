//! Parsing of `/proc/net/xfrm_stat`: the kernel's XFRM error counters, one `Name value` per line.

/// One counter, such as `XfrmInNoStates 3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XfrmCounter {
    pub name: String,
    pub value: u64,
}

/// Why a line of `xfrm_stat` could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XfrmStatError {
    #[error("xfrm_stat line {line}: expected `XfrmName <number>`, got {text:?}")]
    BadLine { line: usize, text: String },
}

/// Parses the whole file; blank lines are skipped, anything else malformed is an error.
pub fn parse_xfrm_stat(text: &str) -> Result<Vec<XfrmCounter>, XfrmStatError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(XfrmStatError::BadLine {
                line: i + 1,
                text: raw.to_string(),
            });
        };
        let Ok(value) = value.parse::<u64>() else {
            return Err(XfrmStatError::BadLine {
                line: i + 1,
                text: raw.to_string(),
            });
        };
        if !name.starts_with("Xfrm") {
            return Err(XfrmStatError::BadLine {
                line: i + 1,
                text: raw.to_string(),
            });
        }
        out.push(XfrmCounter {
            name: name.to_string(),
            value,
        });
    }
    Ok(out)
}
