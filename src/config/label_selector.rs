//! The syntax of a Kubernetes label selector (`remotes[].import.selector`), checked when the
//! config is read so that a typo names the field instead of failing at run time.

/// Checks the syntax of a Kubernetes label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
/// `k in (a,b)`, `k notin (a,b)`, comma-separated), so a typo is a config error naming the
/// field rather than a remote that fails at run time with the API server's 400.
pub fn check(sel: &str) -> Result<(), String> {
    if sel.trim().is_empty() {
        return Err("empty selector (use `import: all` to import every Service)".into());
    }
    if sel.len() > 1024 {
        return Err("longer than 1024 bytes".into());
    }
    let key_ok = |k: &str| {
        let k = k.trim();
        let (prefix, name) = k.rsplit_once('/').unwrap_or(("", k));
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        let prefix_ok = prefix.len() <= 253
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
        name_ok && prefix_ok && !(k.contains('/') && prefix.is_empty())
    };
    let value_ok = |v: &str| {
        let v = v.trim();
        v.is_empty()
            || (v.len() <= 63
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
    };
    // Split on commas outside parentheses.
    let mut reqs = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in sel.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                reqs.push(&sel[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    reqs.push(&sel[start..]);
    for req in reqs {
        let r = req.trim();
        let bad = || format!("'{r}' is not a label requirement (k=v, k!=v, k, !k, k in (a,b))");
        if let Some(k) = r.strip_prefix('!') {
            key_ok(k).then_some(()).ok_or_else(bad)?;
        } else if let Some((k, v)) = r.split_once("!=") {
            (key_ok(k) && value_ok(v)).then_some(()).ok_or_else(bad)?;
        } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
            (key_ok(k) && value_ok(v)).then_some(()).ok_or_else(bad)?;
        } else if let Some(open) = r.find('(') {
            let head: Vec<&str> = r[..open].split_whitespace().collect();
            let list = r[open + 1..].strip_suffix(')').ok_or_else(bad)?;
            let ok = matches!(head.as_slice(), [k, "in" | "notin"] if key_ok(k))
                && list.split(',').all(|v| !v.trim().is_empty() && value_ok(v));
            ok.then_some(()).ok_or_else(bad)?;
        } else {
            key_ok(r).then_some(()).ok_or_else(bad)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_the_kubernetes_forms_and_refuses_the_rest() {
        for good in [
            "a",
            "!a",
            "a!=b",
            "a==b",
            "a=b",
            "example.com/x=",
            "a notin (x,y),b",
            "tier in (web, api)",
        ] {
            assert!(check(good).is_ok(), "{good}");
        }
        for bad in [
            "", " ", "a=b,", "=x", "a in (b", "/x=1", "a=b c", "a in ()", "a)(", "-a",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
