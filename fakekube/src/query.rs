//! Query strings: percent-decoding and the typed parameters of list and watch requests.

use std::collections::HashMap;

use crate::error::ApiError;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte).
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let v = b
                    .get(i + 1)
                    .and_then(|&h| hex(h))
                    .zip(b.get(i + 2).and_then(|&l| hex(l)))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("invalid percent-encoding in query {s:?}"))
                    })?;
                out.push(v.0 << 4 | v.1);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not valid UTF-8"))
}

/// The parameters of one request; the last of repeated keys wins.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(q: &str) -> Result<Self, ApiError> {
        let mut m = HashMap::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(percent_decode(k)?, percent_decode(v)?);
        }
        Ok(Query(m))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A non-empty value.
    pub fn value(&self, k: &str) -> Option<&str> {
        self.get(k).filter(|v| !v.is_empty())
    }

    /// Go's strconv.ParseBool, as the apiserver uses; absent or empty is None.
    pub fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.value(k) {
            None => Ok(None),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!(
                "invalid boolean value {v:?} for {k}"
            ))),
        }
    }

    pub fn u64(&self, k: &str) -> Result<Option<u64>, ApiError> {
        self.value(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid value {v:?} for {k}: must be a non-negative integer"
                    ))
                })
            })
            .transpose()
    }

    /// `resourceVersion`: None when absent or empty; "0" is Some(0).
    pub fn resource_version(&self) -> Result<Option<u64>, ApiError> {
        self.value("resourceVersion")
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v:?}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let q = Query::parse(
            "labelSelector=app%20in%20(a%2Cb)&watch=1&x&limit=5&resourceVersion=0&q=a+b",
        )
        .unwrap();
        assert_eq!(q.get("labelSelector"), Some("app in (a,b)"));
        assert_eq!(q.bool("watch").unwrap(), Some(true));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(q.u64("limit").unwrap(), Some(5));
        assert_eq!(q.resource_version().unwrap(), Some(0));
        assert_eq!(q.get("q"), Some("a b"));
        assert!(Query::parse("a=%zz").is_err());
        assert!(Query::parse("a=%4").is_err());
        assert!(Query::parse("limit=-1").unwrap().u64("limit").is_err());
        assert!(Query::parse("watch=yes").unwrap().bool("watch").is_err());
        assert!(Query::parse("resourceVersion=abc")
            .unwrap()
            .resource_version()
            .is_err());
    }
}
