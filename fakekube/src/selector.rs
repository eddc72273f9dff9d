//! Label and field selectors, with the syntax the apiserver accepts.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelReq {
    Exists(String),
    NotExists(String),
    /// `k=v`, `k==v`, `k in (a,b)`
    In(String, Vec<String>),
    /// `k!=v`, `k notin (a,b)` (also true when the label is absent)
    NotIn(String, Vec<String>),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector: all requirements must hold (comma = AND). Empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelReq>);

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')
}

fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).map(|&b| b as char)
    }
    fn eat(&mut self, t: &str) -> bool {
        if self.s[self.pos..].starts_with(t.as_bytes()) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    fn word(&mut self, ok: fn(char) -> bool) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !ok(c) {
                break;
            }
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
}

impl LabelSelector {
    /// Parses `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k>n`, `k<n`,
    /// joined by commas.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut lx = Lexer {
            s: s.as_bytes(),
            pos: 0,
        };
        let mut reqs = Vec::new();
        lx.skip_ws();
        if lx.at_end() {
            return Ok(LabelSelector(reqs));
        }
        loop {
            lx.skip_ws();
            let negated = lx.eat("!");
            lx.skip_ws();
            let key = lx.word(is_key_char);
            if key.is_empty() {
                return Err(format!(
                    "unable to parse requirement: key expected at position {} in {s:?}",
                    lx.pos
                ));
            }
            lx.skip_ws();
            let req = if negated {
                LabelReq::NotExists(key)
            } else if lx.at_end() || lx.peek() == Some(',') {
                LabelReq::Exists(key)
            } else if lx.eat("==") || lx.eat("=") {
                lx.skip_ws();
                LabelReq::In(key, vec![lx.word(is_value_char)])
            } else if lx.eat("!=") {
                lx.skip_ws();
                LabelReq::NotIn(key, vec![lx.word(is_value_char)])
            } else if lx.eat(">") || lx.eat("<") {
                let gt = lx.s[lx.pos - 1] == b'>';
                lx.skip_ws();
                let w = lx.word(|c| c.is_ascii_digit() || c == '-');
                let n: i64 = w
                    .parse()
                    .map_err(|_| format!("invalid integer value {w:?} in {s:?}"))?;
                if gt {
                    LabelReq::Gt(key, n)
                } else {
                    LabelReq::Lt(key, n)
                }
            } else {
                let op = lx.word(|c| c.is_ascii_alphabetic());
                let notin = match op.as_str() {
                    "in" => false,
                    "notin" => true,
                    _ => {
                        return Err(format!(
                            "unable to parse requirement: unknown operator {op:?} in {s:?}"
                        ))
                    }
                };
                lx.skip_ws();
                if !lx.eat("(") {
                    return Err(format!("expected '(' after {op} in {s:?}"));
                }
                let mut values = Vec::new();
                loop {
                    lx.skip_ws();
                    values.push(lx.word(is_value_char));
                    lx.skip_ws();
                    if lx.eat(",") {
                        continue;
                    }
                    if lx.eat(")") {
                        break;
                    }
                    return Err(format!("expected ',' or ')' in value set of {s:?}"));
                }
                if notin {
                    LabelReq::NotIn(key, values)
                } else {
                    LabelReq::In(key, values)
                }
            };
            reqs.push(req);
            lx.skip_ws();
            if lx.at_end() {
                break;
            }
            if !lx.eat(",") {
                return Err(format!(
                    "unexpected character at position {} in {s:?}",
                    lx.pos
                ));
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            LabelReq::Gt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelReq::Lt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }
}

/// One requirement of a field selector: `path=value`, `path==value` or `path!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldReq {
    pub path: String,
    pub value: String,
    pub negated: bool,
}

/// A parsed field selector (comma = AND). Any dotted path into the object is accepted
/// (the real apiserver only allows a few per resource); an absent field reads as "".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldReq>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (path, value, negated) = if let Some((p, v)) = part.split_once("!=") {
                (p, v, true)
            } else if let Some((p, v)) = part.split_once("==") {
                (p, v, false)
            } else if let Some((p, v)) = part.split_once('=') {
                (p, v, false)
            } else {
                return Err(format!(
                    "invalid field selector: '{part}': does not contain an operator"
                ));
            };
            let path = path.trim();
            if path.is_empty() || !path.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                return Err(format!("invalid field selector: '{part}'"));
            }
            reqs.push(FieldReq {
                path: path.to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `metadata.name=x` if the selector pins a single name.
    pub fn pinned_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|r| !r.negated && r.path == "metadata.name")
            .map(|r| r.value.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let mut cur = Some(obj);
            for seg in r.path.split('.') {
                cur = cur.and_then(|c| c.get(seg));
            }
            let actual = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == r.value) != r.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns1", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn label_forms() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m(""));
        assert!(m("app"));
        assert!(!m("!app"));
        assert!(m("!missing"));
        assert!(m("app=web"));
        assert!(m("app == web"));
        assert!(!m("app!=web"));
        assert!(m("missing!=x"));
        assert!(m("app in (db, web)"));
        assert!(!m("app notin (db,web)"));
        assert!(m("missing notin (a)"));
        assert!(m("app=web,tier=front"));
        assert!(!m("app=web,tier=back"));
        assert!(m("app in (web),tier notin (back),!x"));
        assert!(m("n>4"));
        assert!(!m("n<5"));
        assert!(m("example.com/key!=v"));
    }

    #[test]
    fn label_errors() {
        for bad in ["app in web", "app in (a", "=x", "app ~ x", "a,,b", "a b"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fields() {
        let o = obj(json!({}));
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&o);
        assert!(m("metadata.name=a"));
        assert!(m("metadata.name==a,metadata.namespace=ns1"));
        assert!(!m("metadata.name!=a"));
        assert!(m("metadata.namespace!=kube-system"));
        assert!(m("spec.nodeName=n1"));
        assert!(m("status.phase="));
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert_eq!(
            FieldSelector::parse("metadata.name=x")
                .unwrap()
                .pinned_name(),
            Some("x")
        );
    }
}
