//! `[auth]`: where the password and ACL files are and how client ids bind
//! to user names. Plain configuration types: this module imports nothing of
//! the broker (the `auth` module implements them).

use std::path::PathBuf;

use serde::Deserialize;

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A `mosquitto_passwd` file; absent: no password database.
    pub password_file: Option<PathBuf>,
    /// A Mosquitto ACL file; absent: every topic allowed (less `[acl]` deny lists).
    pub acl_file: Option<PathBuf>,
    /// Which client ids a user may use (see [`ClientIdBinding`]).
    pub client_id_binding: ClientIdBinding,
}

/// `[auth] client_id_binding`: binds client ids to user names (from the
/// password file or the certificate), so one user cannot take over, drain
/// or wipe another user's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIdBinding {
    /// Any client id (Mosquitto's default); inherited in-flight messages
    /// are still filtered through the new user's read ACL.
    #[default]
    None,
    /// The client id must equal the user name.
    Username,
    /// The client id must be the user name, or start with it followed by
    /// one of `-`, `_`, `:`, `.` or `/` (`alice`, `alice-dash`, `alice/1`).
    /// Clients without a user name may not use an id bound to a known user.
    UsernamePrefix,
}

impl ClientIdBinding {
    /// May a client authenticated as `user` use `client_id`?
    pub fn allows(self, user: &str, client_id: &str) -> bool {
        match self {
            ClientIdBinding::None => true,
            ClientIdBinding::Username => client_id == user,
            ClientIdBinding::UsernamePrefix => {
                client_id == user
                    || client_id
                        .strip_prefix(user)
                        .is_some_and(|rest| rest.starts_with(['-', '_', ':', '.', '/']))
            }
        }
    }
}
