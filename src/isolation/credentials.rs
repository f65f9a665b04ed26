//! Credentials of a sandbox's own PostgreSQL login role and Redis ACL user (template options
//! `postgres_role` and `redis_acl`): their names, and freshly generated passwords.
//!
//! Names derive from the full sandbox id (never truncated): both are `sandbox_<32 hex>`, the
//! name of the sandbox's schema. Passwords are 256 random bits (64 hex digits). PostgreSQL is
//! given only a SCRAM-SHA-256 verifier and Redis only the SHA-256 of a password, so the
//! password itself reaches neither server's logs; it is kept in sandboxd's
//! `sandbox_credentials` table for GetConnectionDetails (README, "Isolation between
//! sandboxes").

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{sandbox::SandboxId, secret::Secret};

/// PBKDF2 iterations of the SCRAM verifier (PostgreSQL's own default).
const SCRAM_ITERATIONS: u32 = 4096;

/// The login role of a sandbox: `sandbox_<32 hex>`, like its schema.
pub fn role_name(id: SandboxId) -> String {
    id.schema_name()
}

/// The Redis ACL user of a sandbox: `sandbox_<32 hex>`, like its role.
pub fn acl_user_name(id: SandboxId) -> String {
    id.schema_name()
}

/// The sandbox id in a role or ACL user name made by [`role_name`] / [`acl_user_name`].
pub fn id_of_name(name: &str) -> Option<SandboxId> {
    let hex = name.strip_prefix("sandbox_")?;
    let valid =
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid.then(|| uuid::Uuid::try_parse(hex).ok().map(SandboxId::from_uuid)).flatten()
}

/// A generated password of a login role, with the SCRAM-SHA-256 verifier PostgreSQL stores.
#[derive(Debug, Clone)]
pub struct RolePassword {
    pub password: Secret,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`: not the password, but
    /// kept out of logs all the same (it allows an offline guessing attack).
    pub verifier: Secret,
}

impl RolePassword {
    pub fn generate() -> Self {
        let password = random_password();
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let verifier = Secret::new(scram_verifier(password.expose(), &salt, SCRAM_ITERATIONS));
        Self { password, verifier }
    }
}

/// A generated password of a Redis ACL user, with the SHA-256 Redis is given (`#<hex>`).
#[derive(Debug, Clone)]
pub struct AclPassword {
    pub password: Secret,
    pub sha256_hex: Secret,
}

impl AclPassword {
    pub fn generate() -> Self {
        let password = random_password();
        let sha256_hex = Secret::new(hex::encode(Sha256::digest(password.expose().as_bytes())));
        Self { password, sha256_hex }
    }
}

/// What a sandbox is given at creation or claim, by template option.
#[derive(Debug, Clone, Default)]
pub struct IssuedCredentials {
    pub role: Option<RolePassword>,
    pub acl: Option<AclPassword>,
}

impl IssuedCredentials {
    pub fn generate(postgres_role: bool, redis_acl: bool) -> Self {
        Self {
            role: postgres_role.then(RolePassword::generate),
            acl: redis_acl.then(AclPassword::generate),
        }
    }
}

fn random_password() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(hex::encode(bytes))
}

/// RFC 5802 / RFC 7677 server-side secret in PostgreSQL's format. The password is ASCII hex,
/// which SASLprep leaves unchanged.
fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    let salted = pbkdf2_sha256(password.as_bytes(), salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key)
    )
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 with one output block (32 bytes, the length SCRAM needs).
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let prf = Hmac::<Sha256>::new_from_slice(password).expect("HMAC accepts keys of any length");
    let mut block = prf.clone();
    block.update(salt);
    block.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = block.finalize().into_bytes().into();
    let mut output = u;
    for _ in 1..iterations {
        let mut next = prf.clone();
        next.update(&u);
        u = next.finalize().into_bytes().into();
        for (out, byte) in output.iter_mut().zip(u) {
            *out ^= byte;
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_rfc_7914_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1), first 32 bytes.
        let derived = pbkdf2_sha256(b"passwd", b"salt", 1);
        assert_eq!(
            hex::encode(derived),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    #[test]
    fn verifiers_have_postgres_format_and_hide_the_password() {
        let generated = RolePassword::generate();
        let verifier = generated.verifier.expose();
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
        assert!(!verifier.contains(generated.password.expose()));
        assert_eq!(format!("{generated:?}").matches("OMITTED").count(), 2);
    }

    #[test]
    fn names_carry_the_full_id() {
        let id = SandboxId::new();
        let name = role_name(id);
        assert_eq!(name.len(), "sandbox_".len() + 32);
        assert_eq!(id_of_name(&name), Some(id));
        assert_eq!(id_of_name("sandbox_xyz"), None);
        assert_eq!(id_of_name("postgres"), None);
    }
}
