//! Authentication and authorisation from Mosquitto-compatible files.
//!
//! `[auth] password_file` (written by `mosquitto_passwd` or `edgemq passwd`)
//! and `[auth] acl_file` (Mosquitto's ACL syntax) plug into the broker's
//! `Authenticator` hook. Without a password file the listener's anonymous
//! policy decides (as Mosquitto does); with one, a client must present a
//! known user name and its password, or be anonymous on a listener that
//! allows it. Both files are reloaded on SIGHUP; a reload that fails keeps
//! the previous state and logs why. Password hashing runs off the reactor,
//! a few at a time, and failed logins slow their address down
//! ([`throttle`]).

pub mod acl;
pub mod passwd;
pub mod throttle;

use std::sync::{Arc, RwLock};

pub use crate::config::auth::{AuthConfig, ClientIdBinding};
pub use acl::{Access, Acl};
pub use passwd::{NewHash, PasswordFile};

use crate::hooks::{AuthDecision, AuthRequest, Authenticator, BoxFuture, ClientIdentity};
use crate::protocol::reason;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("cannot write {0}: {1}")]
    Write(String, String),
    #[error("{0}:{1}: {2}")]
    Parse(String, usize, String),
    #[error("no secure random numbers available")]
    Random,
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
    throttle: throttle::LoginThrottle,
    /// Rate limit of failed-login log lines.
    log_limit: throttle::LogLimit,
    /// Bumped after every successful reload (connections re-check).
    reloaded: tokio::sync::watch::Sender<u64>,
    /// Password checks running at once (they are CPU-bound by design).
    hashing: Arc<tokio::sync::Semaphore>,
}

impl FileAuth {
    /// Loads the configured files; errors name the file and line.
    pub fn load(config: &AuthConfig) -> Result<FileAuth, AuthError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let auth = FileAuth {
            config: config.clone(),
            state: RwLock::new(State::default()),
            throttle: throttle::LoginThrottle::default(),
            log_limit: throttle::LogLimit::default(),
            reloaded: tokio::sync::watch::channel(0).0,
            hashing: Arc::new(tokio::sync::Semaphore::new(cores)),
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
        drop(state);
        // Connections re-check their user and subscriptions (M5).
        self.reloaded.send_modify(|generation| *generation += 1);
        Ok(())
    }

    fn snapshot(&self) -> (Option<Arc<PasswordFile>>, Option<Arc<Acl>>) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        (state.passwords.clone(), state.acl.clone())
    }

    /// Called for every publish and every delivery: no ACL file costs a
    /// branch, and with one the check runs under the read lock instead of
    /// cloning the `Arc` (a contended reference count on every message).
    fn allowed(&self, client: &ClientIdentity, topic: &str, access: Access) -> bool {
        if self.config.acl_file.is_none() {
            return true;
        }
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match &state.acl {
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
                // No password database: a CONNECT user name is unverified,
                // so the client is anonymous for the ACL (its `user`
                // sections need a password file).
                let _ = username;
                return match anonymous_allowed {
                    true => AuthDecision::Allow { username: None },
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
            // Too many logins in progress from this address, or blocked
            // for long after failures: refused before any hashing.
            let Some(attempt) = self.throttle.begin(peer.ip()) else {
                if let Some(suppressed) = self.log_limit.allow() {
                    tracing::warn!(%peer, user = ?user, suppressed, "login refused: too many attempts from this address");
                }
                return AuthDecision::Deny(reason::CONNECTION_RATE_EXCEEDED);
            };
            if !attempt.wait.is_zero() {
                tracing::debug!(%peer, wait = ?attempt.wait, "slowing down a login after failures");
                tokio::time::sleep(attempt.wait).await;
            }
            let check_user = user.clone();
            let ok = match self.hashing.clone().acquire_owned().await {
                Ok(permit) => tokio::task::spawn_blocking(move || {
                    let ok = passwords.verify(&check_user, &password);
                    drop(permit);
                    ok
                })
                .await
                .unwrap_or(false),
                Err(_) => false,
            };
            drop(attempt);
            if ok {
                self.throttle.succeeded(peer.ip(), &user);
                AuthDecision::Allow {
                    username: Some(user),
                }
            } else {
                self.throttle.failed(peer.ip(), &user);
                // Never log the password; the user name is escaped (it is
                // attacker-chosen: no forged lines or terminal escapes), and
                // the lines are rate limited.
                if let Some(suppressed) = self.log_limit.allow() {
                    tracing::warn!(%peer, user = ?user, suppressed, "login failed");
                }
                AuthDecision::Deny(reason::BAD_USER_NAME_OR_PASSWORD)
            }
        })
    }

    fn authorize_publish(&self, client: &ClientIdentity, topic: &str) -> bool {
        self.allowed(client, topic, Access::Write)
    }

    fn authorize_subscribe(&self, client: &ClientIdentity, filter: &str) -> bool {
        let (_, inner) = crate::protocol::topic::split_shared(filter);
        self.allowed(client, inner, Access::Subscribe)
    }

    fn authorize_read(&self, client: &ClientIdentity, topic: &str) -> bool {
        self.allowed(client, topic, Access::Read)
    }

    fn still_allowed(&self, client: &ClientIdentity) -> bool {
        let (passwords, _) = self.snapshot();
        match (&client.username, passwords, client.certificate) {
            (Some(user), Some(passwords), false) => passwords.contains(user),
            _ => true,
        }
    }

    fn reloads(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.reloaded.subscribe())
    }

    fn id_owner(&self, client_id: &str) -> Option<String> {
        let binding = self.config.client_id_binding;
        let (passwords, _) = self.snapshot();
        let passwords = passwords?;
        let owner = passwords.users().find(|u| binding.allows(u, client_id));
        owner.map(str::to_string)
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
    fn verifies_argon2id_entries_from_another_implementation() {
        // Written by Python's argon2-cffi 23 (PasswordHasher(time_cost=2,
        // memory_cost=8192, parallelism=1).hash("s3cret")).
        let file = "carol:$argon2id$v=19$m=8192,t=2,p=1$Md3TkxnpW6oinYZsy7zRMg$7RejpExx+X6HdrHDLk2w2/yX793k545eA7l7cJ5hy/M\n";
        let p = PasswordFile::parse(file, "pw").unwrap();
        assert!(p.verify("carol", b"s3cret"));
        assert!(!p.verify("carol", b"s3cre"));
        let err = PasswordFile::parse("x:$argon2id$v=19$m=oops\n", "pw").unwrap_err();
        assert_eq!(err.to_string(), "pw:1: unsupported or malformed hash");
    }

    #[test]
    fn new_entries_verify_and_replace_old_ones() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        passwd::set_password(&path, "dev", b"one", NewHash::Argon2id).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600, "a new file is private");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        passwd::set_password(&path, "op", b"two", NewHash::Pbkdf2).unwrap();
        passwd::set_password(&path, "dev", b"three", NewHash::Argon2id).unwrap();
        assert_eq!(mode(&path), 0o640, "an existing file keeps its mode");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("dev:$argon2id$v=19$"), "{text}");
        assert!(text.contains("\nop:$7$10000$"), "{text}");
        let p = PasswordFile::load(&path).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.verify("dev", b"three") && !p.verify("dev", b"one") && p.verify("op", b"two"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn unknown_users_cost_what_known_ones_do() {
        // argon2id users: an unknown one is checked against argon2 with the
        // file's parameters, not against the cheaper PBKDF2 (37 vs 11 ms).
        let argon = "carol:$argon2id$v=19$m=8192,t=2,p=1$Md3TkxnpW6oinYZsy7zRMg$7RejpExx+X6HdrHDLk2w2/yX793k545eA7l7cJ5hy/M\n";
        let p = PasswordFile::parse(argon, "pw").unwrap();
        assert_eq!(p.dummy_format(), Some("argon2"));
        assert!(
            !p.verify("nobody", b"s3cret"),
            "an unknown user never logs in"
        );
        let sha = "bob:$6$pQlPvZaHngE4Ssu0$0cFAu3Et35h797bcD4XXchJ1tjEcl0X6otEqfWGZ/bhEeG29fjhn7t0VweU1Ef7874Oij8BwqSxaUc7gzfeC6w==\n";
        let p = PasswordFile::parse(sha, "pw").unwrap();
        assert_eq!(p.dummy_format(), Some("sha512"));
        assert!(!p.verify("nobody", b"hunter2"));
    }

    #[tokio::test]
    async fn without_a_password_file_user_names_are_unverified_and_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let acl = dir.path().join("acl");
        std::fs::write(&acl, "user admin\ntopic readwrite #\n").unwrap();
        let auth = FileAuth::load(&AuthConfig {
            acl_file: Some(acl),
            ..AuthConfig::default()
        })
        .unwrap();
        let request = AuthRequest {
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            anonymous_allowed: true,
            client_id: "c",
            username: Some("admin"),
            password: None,
        };
        // Claiming to be admin without a password database grants nothing.
        assert_eq!(
            auth.authenticate(request).await,
            AuthDecision::Allow { username: None }
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let err = PasswordFile::parse("ok:$6$YQ==$YQ==\nbroken\n", "pw").unwrap_err();
        assert_eq!(err.to_string(), "pw:2: expected user:hash");
    }
}
