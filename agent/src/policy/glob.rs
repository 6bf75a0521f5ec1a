//! The one glob of policies: `*` (any run of characters) is the only
//! wildcard. Used by SQL rules (function and table names), HTTP rules
//! (parameter values) and request-path patterns; it depends on nothing.

/// Glob match with `*` (any run of characters) as the only wildcard.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == text;
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob() {
        assert!(glob_match("dblink*", "dblink_exec"));
        assert!(glob_match("dblink*", "dblink"));
        assert!(!glob_match("dblink*", "xdblink"));
        assert!(glob_match("*_to_xml", "query_to_xml"));
        assert!(!glob_match("*_to_xml", "query_to_xmlschema"));
        assert!(glob_match("pg_*backup*", "pg_backup_start"));
        assert!(glob_match("a*b*c", "aXbYbc"));
        assert!(!glob_match("a*b*c", "aXbYb"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("abc", "ab"));
    }
}
