//! ACL files in Mosquitto's syntax.
//!
//! ```text
//! # topic lines before any `user` line apply to anonymous clients
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! # patterns apply to every client; %c is the client id, %u the user name
//! pattern write devices/%c/up
//! ```
//! As in Mosquitto, once an ACL file is configured everything not granted is
//! denied, and a `deny` line wins over any grant. A subscription is allowed
//! when a readable ACL topic covers the whole filter (`sensors/#` covers
//! `sensors/+/temp`; `sensors/a` does not cover `sensors/#`).

use std::path::Path;

use crate::protocol::topic::matches;

use super::AuthError;

/// What a client wants to do with a topic or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Subscribe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    ReadWrite,
    Deny,
}

#[derive(Debug, Clone)]
struct Rule {
    kind: Kind,
    topic: String,
}

/// A loaded ACL file.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: std::collections::HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl Acl {
    pub fn load(path: &Path) -> Result<Acl, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Read(path.display().to_string(), e.to_string()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Acl, AuthError> {
        let mut acl = Acl::default();
        let mut current: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| AuthError::Parse(file.to_string(), n + 1, why.to_string());
            let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match word {
                "user" => current = Some(rest.to_string()),
                "topic" | "pattern" => {
                    let rule = parse_rule(rest)
                        .ok_or_else(|| bad("expected [read|write|readwrite|deny] TOPIC"))?;
                    match (word, &current) {
                        ("pattern", _) => acl.patterns.push(rule),
                        (_, Some(user)) => acl.users.entry(user.clone()).or_default().push(rule),
                        (_, None) => acl.anonymous.push(rule),
                    }
                }
                _ => return Err(bad("expected `topic`, `user` or `pattern`")),
            }
        }
        Ok(acl)
    }

    /// May this client do `access` on `topic` (a filter for `Subscribe`)?
    pub fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        // A client id or user name holding a wildcard would turn every
        // `pattern` line into a wildcard grant (`%c` = `#`): refuse such
        // clients everything while patterns are in force, as Mosquitto does.
        let dangerous = |s: &str| s.contains(['+', '#']);
        if !self.patterns.is_empty() && (dangerous(client_id) || username.is_some_and(dangerous)) {
            return false;
        }
        let own = match username {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        let substituted: Vec<Rule> = self
            .patterns
            .iter()
            .filter(|r| username.is_some() || !r.topic.contains("%u"))
            // A `/` in a substituted name would reach into another level
            // (`users/%u/#` for `alice/x`): such a pattern does not apply.
            .filter(|r| !(r.topic.contains("%u") && username.is_some_and(|u| u.contains('/'))))
            .filter(|r| !(r.topic.contains("%c") && client_id.contains('/')))
            .map(|r| Rule {
                kind: r.kind,
                topic: r
                    .topic
                    .replace("%c", client_id)
                    .replace("%u", username.unwrap_or("")),
            })
            .collect();
        let rules = own.iter().chain(substituted.iter());
        let applies = |r: &Rule| match access {
            Access::Subscribe => covers(&r.topic, topic),
            _ => matches(&r.topic, topic),
        };
        let mut granted = false;
        for r in rules {
            if !applies(r) {
                continue;
            }
            match (r.kind, access) {
                (Kind::Deny, _) => return false,
                (Kind::ReadWrite, _)
                | (Kind::Read, Access::Read | Access::Subscribe)
                | (Kind::Write, Access::Write) => granted = true,
                _ => {}
            }
        }
        granted
    }
}

fn parse_rule(rest: &str) -> Option<Rule> {
    let (kind, topic) = match rest.split_once(char::is_whitespace) {
        Some(("read", t)) => (Kind::Read, t),
        Some(("write", t)) => (Kind::Write, t),
        Some(("readwrite", t)) => (Kind::ReadWrite, t),
        Some(("deny", t)) => (Kind::Deny, t),
        // Mosquitto: a topic without an access type means readwrite.
        _ => (Kind::ReadWrite, rest),
    };
    let topic = topic.trim();
    (!topic.is_empty()).then(|| Rule {
        kind,
        topic: topic.to_string(),
    })
}

/// Does the ACL filter `acl` cover every topic the subscription `sub` can match?
fn covers(acl: &str, sub: &str) -> bool {
    let mut a = acl.split('/');
    let mut s = sub.split('/');
    loop {
        match (a.next(), s.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "topic read public/#\n\nuser alice\ntopic readwrite alice/#\ntopic deny alice/secret\n# devices\npattern write devices/%c/up\npattern read users/%u/#\n";

    #[test]
    fn decisions() {
        let acl = Acl::parse(FILE, "acl").expect("parses");
        let cases = [
            ("c", None, "public/x", Access::Read, true),
            ("c", None, "public/x", Access::Write, false),
            ("c", None, "alice/x", Access::Read, false),
            ("c", Some("alice"), "alice/x", Access::Write, true),
            ("c", Some("alice"), "alice/secret", Access::Read, false),
            ("c", Some("alice"), "public/x", Access::Read, false),
            ("dev7", Some("bob"), "devices/dev7/up", Access::Write, true),
            ("dev7", Some("bob"), "devices/dev8/up", Access::Write, false),
            ("+", Some("bob"), "devices/dev8/up", Access::Write, false),
            ("#", Some("bob"), "devices/dev8/up", Access::Write, false),
            ("x", Some("+"), "users/bob/inbox", Access::Read, false),
            ("x", Some("bob"), "users/bob/inbox", Access::Read, true),
            ("x", None, "users//inbox", Access::Read, false),
            ("c", Some("alice"), "alice/+/temp", Access::Subscribe, true),
            ("c", Some("alice"), "#", Access::Subscribe, false),
            ("c", None, "public/#", Access::Subscribe, true),
            // A `/` in a substituted name does not reach another level.
            (
                "x",
                Some("bob/inbox"),
                "users/bob/inbox/y",
                Access::Read,
                false,
            ),
            (
                "dev7/up",
                Some("bob"),
                "devices/dev7/up/up",
                Access::Write,
                false,
            ),
        ];
        for (client, user, topic, access, want) in cases {
            assert_eq!(
                acl.check(client, user, topic, access),
                want,
                "{client} {user:?} {topic} {access:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_line() {
        let err = Acl::parse("user a\ntopic\nbogus line\n", "acl.conf").expect_err("bad");
        assert_eq!(
            err.to_string(),
            "acl.conf:2: expected [read|write|readwrite|deny] TOPIC"
        );
    }
}
