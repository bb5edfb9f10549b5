//! Topic names and filters (MQTT 5.0 section 4.7): validation and matching.
//!
//! One implementation shared by the codec (PUBLISH topics), the router, the
//! bridge's rules and the ACLs, so they can never disagree on what matches.

/// A topic name a PUBLISH may carry: non-empty, no wildcards, no U+0000.
pub fn valid_topic_name(name: &str) -> bool {
    // Byte scan: these are ASCII, so they never occur inside a multi-byte
    // UTF-8 sequence, and a byte loop beats a char-pattern search.
    !name.is_empty() && !name.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

/// A topic filter: `+` fills a whole level, `#` only as the whole last level.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        match level {
            "#" if !is_last => return false,
            "#" | "+" => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Does `filter` match `topic`? Topics starting with `$` are not matched by a
/// filter whose first level is a wildcard (MQTT 5.0 section 4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Splits `$share/{group}/{filter}` into its group and filter.
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, inner) = rest.split_once('/')?;
    Some((group, inner))
}

/// A shared subscription is well formed when its group name is non-empty and
/// wildcard-free and its filter is a valid filter.
pub fn valid_shared(filter: &str) -> bool {
    match parse_shared(filter) {
        Some((group, inner)) => {
            !group.is_empty() && !group.contains(['+', '#']) && valid_topic_filter(inner)
        }
        None => false,
    }
}

/// A filter split into its shared group (if any) and the real filter.
pub fn split_shared(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Some((group, inner)) => (Some(group), inner),
        None => (None, filter),
    }
}

/// True when `filter` is a valid topic filter, shared or not.
pub fn valid_filter(filter: &str) -> bool {
    if filter.starts_with("$share/") {
        return valid_shared(filter);
    }
    valid_topic_filter(filter)
}

/// True for the broker's reserved topics: `$SYS` and `$SYS/...`.
pub fn reserved_topic(name: &str) -> bool {
    name == "$SYS" || name.starts_with("$SYS/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_topic_name("a/b"));
        assert!(valid_topic_name("/"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name("a\0b"));
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/+/c",
            "a/#",
            "+/+",
            "/",
            "sport/tennis/#",
            "$SYS/#",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/c", "a+", "a/b#", "##", "a/+b"] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn matching_table() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/a", true),
            ("+", "/a", false),
            ("sport/+", "sport/", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/c", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(matches(f, t), want, "{f} vs {t}");
        }
    }

    #[test]
    fn shared() {
        assert_eq!(parse_shared("$share/g/a/#"), Some(("g", "a/#")));
        assert_eq!(parse_shared("a/b"), None);
        assert!(valid_shared("$share/g/a/+"));
        assert!(!valid_shared("$share//a"));
        assert!(!valid_shared("$share/g+/a"));
        assert!(!valid_shared("$share/g"));
    }
}
