//! Password files compatible with `mosquitto_passwd`.
//!
//! Lines are `user:hash`. Verified formats: `$7$ITER$SALT$HASH`
//! (PBKDF2-HMAC-SHA512, Mosquitto 2's default) and `$6$SALT$HASH`
//! (SHA-512 of password then salt, Mosquitto 1.x), base64 encoded. New
//! entries (`edgemq passwd`) are written as `$7$` so the same file also
//! works with Mosquitto. Comparisons are constant-time (ring).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;

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
}

/// A loaded password file.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
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
        Ok(PasswordFile { users })
    }

    /// True when `user` exists and `password` is theirs.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            }) => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            Some(Hash::Sha512 { salt, hash }) => {
                let mut ctx = digest::Context::new(&digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                constant_time_eq(ctx.finish().as_ref(), hash)
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
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
        _ => None,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new `$7$` entry for `password`.
pub fn hash_password(password: &[u8]) -> Result<String, AuthError> {
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

/// Creates or updates `user` in the file at `path` (written atomically,
/// mode 0600).
pub fn set_password(path: &Path, user: &str, password: &[u8]) -> Result<(), AuthError> {
    if user.is_empty() || user.contains(':') {
        return Err(AuthError::Parse(
            path.display().to_string(),
            0,
            "user names cannot be empty or contain ':'".into(),
        ));
    }
    let existing = if path.exists() {
        std::fs::read_to_string(path)
            .map_err(|e| AuthError::Read(path.display().to_string(), e.to_string()))?
    } else {
        String::new()
    };
    let entry = format!("{user}:{}", hash_password(password)?);
    let mut lines: Vec<String> = Vec::new();
    let mut replaced = false;
    for line in existing.lines() {
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
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all((lines.join("\n") + "\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| AuthError::Read(path.display().to_string(), e.to_string()))
}
