//! Password files compatible with `mosquitto_passwd`.
//!
//! Lines are `user:hash`. Verified formats: `$7$ITER$SALT$HASH`
//! (PBKDF2-HMAC-SHA512, Mosquitto 2's default), `$6$SALT$HASH` (SHA-512 of
//! password then salt, Mosquitto 1.x), both base64 encoded, and argon2id
//! PHC strings (`$argon2id$v=19$m=...,t=...,p=...$SALT$HASH`). New entries
//! (`edgemq passwd`) are argon2id, memory-hard and the current OWASP
//! recommendation; `edgemq passwd --pbkdf2` writes `$7$` entries for files
//! that Mosquitto 2.0 must read too. Comparisons are constant-time, and an
//! unknown user costs as much as a wrong password, so response times do not
//! tell which user names exist: an unknown user is checked against a copy
//! of an entry of the file's most common format, with its parameters
//! (argon2 memory and passes, PBKDF2 iterations).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::{digest, pbkdf2, rand::SecureRandom};

use super::AuthError;

/// Iterations for new `$7$` entries (Mosquitto writes 101; we use more).
const NEW_ITERATIONS: u32 = 10_000;

#[derive(Debug, Clone)]
enum Hash {
    Pbkdf2 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// A PHC string, checked by the argon2 crate with its own parameters.
    Argon2(String),
}

/// The hash format for new entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewHash {
    /// argon2id with the argon2 crate's defaults (19 MiB, 2 passes).
    Argon2id,
    /// `$7$` PBKDF2-SHA512, readable by Mosquitto 2.0.
    Pbkdf2,
}

/// A loaded password file.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
    /// Checked for unknown users: an entry of the most common format.
    dummy: Option<Hash>,
}

impl PasswordFile {
    /// Reads and parses `path`; errors name the file and the line.
    pub fn load(path: &Path) -> Result<PasswordFile, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Read(path.display().to_string(), e.to_string()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<PasswordFile, AuthError> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| AuthError::Parse(file.to_string(), n + 1, why.to_string());
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad("expected user:hash"))?;
            users.insert(
                user.to_string(),
                parse_hash(hash).ok_or_else(|| bad("unsupported or malformed hash"))?,
            );
        }
        let dummy = representative(&users);
        Ok(PasswordFile { users, dummy })
    }

    /// True when `user` exists and `password` is theirs.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            None if self.dummy.is_some() => {
                // Same work as a wrong password for a typical known user;
                // the result is discarded.
                if let Some(dummy) = &self.dummy {
                    let _ = check(dummy, password);
                }
                false
            }
            Some(hash) => check(hash, password),
            None => {
                // Same work as a wrong password for a known user.
                let salt = [0u8; 12];
                let mut out = [0u8; 64];
                if let Some(iterations) = NonZeroU32::new(NEW_ITERATIONS) {
                    pbkdf2::derive(
                        pbkdf2::PBKDF2_HMAC_SHA512,
                        iterations,
                        &salt,
                        password,
                        &mut out,
                    );
                }
                false
            }
        }
    }

    /// The format unknown users are checked against (tests).
    #[cfg(test)]
    pub fn dummy_format(&self) -> Option<&'static str> {
        self.dummy.as_ref().map(|h| match h {
            Hash::Argon2(_) => "argon2",
            Hash::Pbkdf2 { .. } => "pbkdf2",
            Hash::Sha512 { .. } => "sha512",
        })
    }

    /// True when `user` has an entry.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The user names in the file.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Does `password` match `hash`?
fn check(hash: &Hash, password: &[u8]) -> bool {
    match hash {
        Hash::Pbkdf2 {
            iterations,
            salt,
            hash,
        } => pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA512,
            *iterations,
            salt,
            password,
            hash,
        )
        .is_ok(),
        Hash::Sha512 { salt, hash } => {
            let mut ctx = digest::Context::new(&digest::SHA512);
            ctx.update(password);
            ctx.update(salt);
            constant_time_eq(ctx.finish().as_ref(), hash)
        }
        Hash::Argon2(phc) => verify_argon2(phc, password),
    }
}

/// An entry of the most common format in `users` (argon2 first on a tie:
/// the costliest), for unknown users.
fn representative(users: &HashMap<String, Hash>) -> Option<Hash> {
    let rank = |h: &Hash| match h {
        Hash::Argon2(_) => 2,
        Hash::Pbkdf2 { .. } => 1,
        Hash::Sha512 { .. } => 0,
    };
    let mut counts = [0usize; 3];
    for h in users.values() {
        counts[rank(h)] += 1;
    }
    let best = (0..3).rev().max_by_key(|&r| (counts[r], r))?;
    if counts[best] == 0 {
        return None;
    }
    users.values().find(|h| rank(h) == best).cloned()
}

fn parse_hash(s: &str) -> Option<Hash> {
    let mut parts = s.split('$');
    parts.next().filter(|p| p.is_empty())?;
    match parts.next()? {
        "7" => {
            let iterations = NonZeroU32::new(parts.next()?.parse().ok()?)?;
            let salt = STANDARD.decode(parts.next()?).ok()?;
            let hash = STANDARD.decode(parts.next()?).ok()?;
            Some(Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            })
        }
        "6" => {
            let salt = STANDARD.decode(parts.next()?).ok()?;
            let hash = STANDARD.decode(parts.next()?).ok()?;
            Some(Hash::Sha512 { salt, hash })
        }
        "argon2id" | "argon2i" | "argon2d" => {
            // Checked once here, so a bad entry is reported at load time.
            let parsed = PasswordHash::new(s).ok()?;
            parsed.hash?;
            argon2::Params::try_from(&parsed).ok()?;
            Some(Hash::Argon2(s.to_string()))
        }
        _ => None,
    }
}

fn verify_argon2(phc: &str, password: &[u8]) -> bool {
    PasswordHash::new(phc)
        .map(|hash| Argon2::default().verify_password(password, &hash).is_ok())
        .unwrap_or(false)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new entry's hash for `password` in `format`.
pub fn hash_password(password: &[u8], format: NewHash) -> Result<String, AuthError> {
    match format {
        NewHash::Argon2id => Argon2::default()
            .hash_password(password)
            .map(|h| h.to_string())
            .map_err(|_| AuthError::Random),
        NewHash::Pbkdf2 => hash_pbkdf2(password),
    }
}

/// A new `$7$` entry for `password`.
fn hash_pbkdf2(password: &[u8]) -> Result<String, AuthError> {
    let mut salt = [0u8; 12];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| AuthError::Random)?;
    let mut hash = [0u8; 64];
    let iterations = NonZeroU32::new(NEW_ITERATIONS).ok_or(AuthError::Random)?;
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        &salt,
        password,
        &mut hash,
    );
    Ok(format!(
        "$7${NEW_ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    ))
}

/// Creates or updates `user` in the file at `path`. The file is replaced
/// atomically (temporary file, fsync, rename, directory fsync); a new file
/// gets mode 0600, an existing one keeps its permissions.
pub fn set_password(
    path: &Path,
    user: &str,
    password: &[u8],
    format: NewHash,
) -> Result<(), AuthError> {
    if user.is_empty() || user.contains(':') {
        return Err(AuthError::Parse(
            path.display().to_string(),
            0,
            "user names cannot be empty or contain ':'".into(),
        ));
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(AuthError::Read(path.display().to_string(), e.to_string())),
    };
    let entry = format!("{user}:{}", hash_password(password, format)?);
    let mut lines: Vec<String> = Vec::new();
    let mut replaced = false;
    for line in existing.as_deref().unwrap_or("").lines() {
        if line.split_once(':').is_some_and(|(u, _)| u == user) {
            lines.push(entry.clone());
            replaced = true;
        } else {
            lines.push(line.to_string());
        }
    }
    if !replaced {
        lines.push(entry);
    }
    replace_file(path, (lines.join("\n") + "\n").as_bytes())
        .map_err(|e| AuthError::Write(path.display().to_string(), e.to_string()))
}

/// Writes `contents` to `path` atomically and durably.
fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "passwd".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
