//! The run's result: a compact table for people and one JSON line for scripts.

use std::fmt::{self, Write as _};
use std::time::Duration;

/// One value of the report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(u64),
    Float(f64),
    Text(String),
    Bool(bool),
    /// Not measured (printed as `-`, JSON `null`).
    None,
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Self::Int(v as u64)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        if v.is_finite() {
            Self::Float(v)
        } else {
            Self::None
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::None, Into::into)
    }
}

/// Ordered key/value pairs.
#[derive(Debug, Default)]
pub(crate) struct Report {
    rows: Vec<(&'static str, Value)>,
}

impl Report {
    /// Appends `key = value`.
    pub(crate) fn put(&mut self, key: &'static str, value: impl Into<Value>) {
        self.rows.push((key, value.into()));
    }

    /// Appends a duration in milliseconds (three decimals).
    pub(crate) fn ms(&mut self, key: &'static str, d: Option<Duration>) {
        self.put(key, d.map(|d| round3(d.as_secs_f64() * 1e3)));
    }

    /// The value of `key`, if present.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.rows.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// One line of JSON (an object, keys in insertion order).
    pub(crate) fn json(&self) -> String {
        let mut s = String::from("{");
        for (i, (k, v)) in self.rows.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            json_str(&mut s, k);
            s.push(':');
            match v {
                Value::Int(n) => {
                    let _ = write!(s, "{n}");
                }
                Value::Float(f) => {
                    let _ = write!(s, "{f}");
                }
                Value::Text(t) => json_str(&mut s, t),
                Value::Bool(b) => {
                    let _ = write!(s, "{b}");
                }
                Value::None => s.push_str("null"),
            }
        }
        s.push('}');
        s
    }
}

impl fmt::Display for Report {
    /// Two columns: key, value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.rows {
            let v = match v {
                Value::Int(n) => n.to_string(),
                Value::Float(x) => format!("{x}"),
                Value::Text(t) => t.clone(),
                Value::Bool(b) => b.to_string(),
                Value::None => "-".to_owned(),
            };
            writeln!(f, "  {k:<width$}  {v}")?;
        }
        Ok(())
    }
}

fn json_str(s: &mut String, text: &str) {
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// Rounds to three decimals (for display; JSON readers want short numbers).
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `q` quantile (0..=1) of `sorted` by the nearest-rank method; None when empty.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `count / span` per second; None for an empty span.
pub(crate) fn rate(count: u64, span: Option<Duration>) -> Option<f64> {
    span.filter(|s| !s.is_zero())
        .map(|s| round3(count as f64 / s.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn json_is_one_escaped_line() {
        let mut r = Report::default();
        r.put("mode", "e2e");
        r.put("n", 3u64);
        r.put("x", 1.5);
        r.put("why", "a \"b\"\nc");
        r.put("none", None::<u64>);
        r.put("ok", true);
        assert_eq!(
            r.json(),
            r#"{"mode":"e2e","n":3,"x":1.5,"why":"a \"b\"\u000ac","none":null,"ok":true}"#
        );
        assert_eq!(r.get("n"), Some(&Value::Int(3)));
        assert!(r.to_string().contains("  mode  e2e\n"));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&v, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn rates_need_a_span() {
        assert_eq!(rate(10, Some(Duration::from_secs(2))), Some(5.0));
        assert_eq!(rate(10, Some(Duration::ZERO)), None);
        assert_eq!(rate(10, None), None);
    }
}
