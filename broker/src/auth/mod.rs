//! Authentication and authorisation from Mosquitto-compatible files.
//!
//! `[auth] password_file` (written by `mosquitto_passwd` or `edgemq passwd`)
//! and `[auth] acl_file` (Mosquitto's ACL syntax) plug into the broker's
//! `Authenticator` hook. Without a password file the listener's anonymous
//! policy decides (as Mosquitto does); with one, a client must present a
//! known user name and its password, or be anonymous on a listener that
//! allows it. Both files are reloaded on SIGHUP; a reload that fails keeps
//! the previous state and logs why. Password hashing runs off the reactor.

pub mod acl;
pub mod passwd;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::Deserialize;

pub use acl::{Access, Acl};
pub use passwd::PasswordFile;

use crate::hooks::{AuthDecision, AuthRequest, Authenticator, BoxFuture, ClientIdentity};
use crate::protocol::reason;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("{0}:{1}: {2}")]
    Parse(String, usize, String),
    #[error("no secure random numbers available")]
    Random,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A `mosquitto_passwd` file; absent: no password database.
    pub password_file: Option<PathBuf>,
    /// A Mosquitto ACL file; absent: every topic allowed (less `[acl]` deny lists).
    pub acl_file: Option<PathBuf>,
}

#[derive(Default)]
struct State {
    passwords: Option<Arc<PasswordFile>>,
    acl: Option<Arc<Acl>>,
}

/// The file-backed authenticator.
pub struct FileAuth {
    config: AuthConfig,
    state: RwLock<State>,
}

impl FileAuth {
    /// Loads the configured files; errors name the file and line.
    pub fn load(config: &AuthConfig) -> Result<FileAuth, AuthError> {
        let auth = FileAuth {
            config: config.clone(),
            state: RwLock::new(State::default()),
        };
        auth.reload()?;
        Ok(auth)
    }

    /// Re-reads both files; on error the previous state stays in force.
    pub fn reload(&self) -> Result<(), AuthError> {
        let passwords = match &self.config.password_file {
            Some(p) => Some(Arc::new(PasswordFile::load(p)?)),
            None => None,
        };
        let acl = match &self.config.acl_file {
            Some(p) => Some(Arc::new(Acl::load(p)?)),
            None => None,
        };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        *state = State { passwords, acl };
        Ok(())
    }

    fn snapshot(&self) -> (Option<Arc<PasswordFile>>, Option<Arc<Acl>>) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        (state.passwords.clone(), state.acl.clone())
    }

    fn allowed(&self, client: &ClientIdentity, topic: &str, access: Access) -> bool {
        match self.snapshot().1 {
            Some(acl) => acl.check(&client.client_id, client.username.as_deref(), topic, access),
            None => true,
        }
    }
}

impl Authenticator for FileAuth {
    fn authenticate<'a>(&'a self, request: AuthRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        let (passwords, _) = self.snapshot();
        let username = request.username.map(str::to_string);
        let password = request.password.map(<[u8]>::to_vec);
        let anonymous_allowed = request.anonymous_allowed;
        let peer = request.peer;
        Box::pin(async move {
            let Some(passwords) = passwords else {
                return match anonymous_allowed {
                    true => AuthDecision::Allow { username },
                    false => AuthDecision::Deny(reason::NOT_AUTHORIZED),
                };
            };
            let Some(user) = username else {
                return match anonymous_allowed {
                    true => AuthDecision::Allow { username: None },
                    false => AuthDecision::Deny(reason::NOT_AUTHORIZED),
                };
            };
            let password = password.unwrap_or_default();
            let check_user = user.clone();
            let ok = tokio::task::spawn_blocking(move || passwords.verify(&check_user, &password))
                .await
                .unwrap_or(false);
            if ok {
                AuthDecision::Allow {
                    username: Some(user),
                }
            } else {
                // Never log the password; the user name and peer are enough.
                tracing::warn!(%peer, user = %user, "login failed");
                AuthDecision::Deny(reason::BAD_USER_NAME_OR_PASSWORD)
            }
        })
    }

    fn authorize_publish(&self, client: &ClientIdentity, topic: &str) -> bool {
        self.allowed(client, topic, Access::Write)
    }

    fn authorize_subscribe(&self, client: &ClientIdentity, filter: &str) -> bool {
        let (_, inner) = crate::router::split_shared(filter);
        self.allowed(client, inner, Access::Subscribe)
    }

    fn authorize_read(&self, client: &ClientIdentity, topic: &str) -> bool {
        self.allowed(client, topic, Access::Read)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn verifies_mosquitto_passwd_entries() {
        // Written by Debian's mosquitto_passwd 2.0.11 (`-c -b pw alice secret`,
        // then `-H sha512 -b pw bob hunter2`).
        let file = "alice:$7$101$BYUHD7k/k6udbu1w$Qe8IR1QEBIc5c5H2QultuuGhJJkYFifzuQmbgsl7j3v1He0I3H6Oo24fbAUpW+u3dE4/cBQjgwB8gtrJ+zPQ3Q==\nbob:$6$pQlPvZaHngE4Ssu0$0cFAu3Et35h797bcD4XXchJ1tjEcl0X6otEqfWGZ/bhEeG29fjhn7t0VweU1Ef7874Oij8BwqSxaUc7gzfeC6w==\n";
        let p = PasswordFile::parse(file, "pw").unwrap();
        assert!(p.verify("alice", b"secret"));
        assert!(!p.verify("alice", b"Secret"));
        assert!(p.verify("bob", b"hunter2"));
        assert!(!p.verify("bob", b"secret"));
        assert!(!p.verify("carol", b"secret"));
    }

    #[test]
    fn new_entries_verify_and_replace_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        passwd::set_password(&path, "dev", b"one").unwrap();
        passwd::set_password(&path, "op", b"two").unwrap();
        passwd::set_password(&path, "dev", b"three").unwrap();
        let p = PasswordFile::load(&path).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.verify("dev", b"three") && !p.verify("dev", b"one") && p.verify("op", b"two"));
    }

    #[test]
    fn bad_lines_are_named() {
        let err = PasswordFile::parse("ok:$6$YQ==$YQ==\nbroken\n", "pw").unwrap_err();
        assert_eq!(err.to_string(), "pw:2: expected user:hash");
    }
}
