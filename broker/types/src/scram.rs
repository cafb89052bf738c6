//! SCRAM-SHA-256 credentials (RFC 5802, RFC 7677): what a broker stores for a user instead of
//! the password, derived on the client so the password never reaches the broker when a user is
//! created or changes it.
//!
//! `SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)`,
//! `StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key"))`,
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`. The broker keeps salt, iterations, stored
//! key and server key (Kafka's and PostgreSQL's choice): enough to check a password, not to
//! recover one, and ready for a SCRAM exchange that never sends the password at all.

use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};

/// PBKDF2 rounds a client derives with: RFC 7677's minimum, Kafka's default.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// The fewest PBKDF2 rounds a broker accepts.
pub const MIN_ITERATIONS: u32 = 4096;
/// The most PBKDF2 rounds a broker accepts: every first check of a password costs them.
pub const MAX_ITERATIONS: u32 = 65_536;
/// Salt length a client derives with, in bytes.
pub const SALT_LEN: usize = 16;
/// The shortest salt a broker accepts, in bytes.
pub const MIN_SALT_LEN: usize = 16;
/// The longest salt a broker accepts, in bytes.
pub const MAX_SALT_LEN: usize = 64;
/// The longest password a client derives from, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Length of SHA-256 outputs: the stored and server keys.
pub const KEY_LEN: usize = 32;

/// A user's SCRAM-SHA-256 credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// Random salt of the PBKDF2 derivation.
    pub salt: Vec<u8>,
    /// PBKDF2 rounds.
    pub iterations: u32,
    /// `SHA-256(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

/// Keys and salt are secrets' cousins: they never go to a log.
impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// A credential a broker does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Too few or too many rounds.
    #[error("SCRAM iterations {0} out of range: must be {MIN_ITERATIONS} to {MAX_ITERATIONS}")]
    Iterations(u32),
    /// Salt too short or too long.
    #[error("SCRAM salt of {0} bytes out of range: must be {MIN_SALT_LEN} to {MAX_SALT_LEN}")]
    Salt(usize),
    /// A key is not a SHA-256 output.
    #[error("SCRAM {0} must be {KEY_LEN} bytes")]
    Key(&'static str),
    /// The password is empty or too long.
    #[error("a password must be 1 to {MAX_PASSWORD_LEN} bytes")]
    Password,
}

impl ScramCredential {
    /// Derives the credential of `password` with `salt` and `iterations`.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Result<Self, CredentialError> {
        if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
            return Err(CredentialError::Password);
        }
        let salted = salted_password(password, salt, iterations)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let credential = Self {
            salt: salt.to_vec(),
            iterations,
            stored_key: digest::digest(&digest::SHA256, client_key.as_ref())
                .as_ref()
                .to_vec(),
            server_key: hmac::sign(&key, b"Server Key").as_ref().to_vec(),
        };
        credential.check()?;
        Ok(credential)
    }

    /// Whether the values are in the ranges a broker accepts.
    pub fn check(&self) -> Result<(), CredentialError> {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&self.iterations) {
            return Err(CredentialError::Iterations(self.iterations));
        }
        if !(MIN_SALT_LEN..=MAX_SALT_LEN).contains(&self.salt.len()) {
            return Err(CredentialError::Salt(self.salt.len()));
        }
        if self.stored_key.len() != KEY_LEN {
            return Err(CredentialError::Key("stored key"));
        }
        if self.server_key.len() != KEY_LEN {
            return Err(CredentialError::Key("server key"));
        }
        Ok(())
    }

    /// Whether `password` is the one this credential was derived from. Costs `iterations`
    /// rounds of PBKDF2; compares in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let Ok(salted) = salted_password(password, &self.salt, self.iterations) else {
            return false;
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        constant_time_eq(stored_key.as_ref(), &self.stored_key)
    }
}

fn salted_password(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<[u8; KEY_LEN], CredentialError> {
    let rounds = NonZeroU32::new(iterations)
        .filter(|_| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations))
        .ok_or(CredentialError::Iterations(iterations))?;
    let mut salted = [0; KEY_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        password,
        &mut salted,
    );
    Ok(salted)
}

/// Equality whose time depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    /// RFC 7677's example exchange (user "user", password "pencil"): the derived keys sign its
    /// AuthMessage with the server signature it gives, and its client proof opens to the
    /// stored key.
    #[test]
    fn derives_the_keys_of_rfc_7677s_example() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::derive(b"pencil", &salt, 4096).unwrap();
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &credential.server_key),
            auth_message.as_bytes(),
        );
        assert_eq!(
            STANDARD.encode(server_signature.as_ref()),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let client_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &credential.stored_key),
            auth_message.as_bytes(),
        );
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(
            digest::digest(&digest::SHA256, &client_key).as_ref(),
            credential.stored_key
        );
        assert!(credential.verify(b"pencil"));
        assert!(!credential.verify(b"pencil "));
        assert!(!credential.verify(b""));
    }

    #[test]
    fn refuses_values_out_of_range() {
        let salt = [7u8; SALT_LEN];
        assert_eq!(
            ScramCredential::derive(b"pw", &salt, 100),
            Err(CredentialError::Iterations(100))
        );
        assert_eq!(
            ScramCredential::derive(b"pw", &salt[..8], 4096),
            Err(CredentialError::Salt(8))
        );
        assert_eq!(
            ScramCredential::derive(b"", &salt, 4096),
            Err(CredentialError::Password)
        );
        let mut credential = ScramCredential::derive(b"pw", &salt, 4096).unwrap();
        credential.stored_key.pop();
        assert_eq!(credential.check(), Err(CredentialError::Key("stored key")));
        assert!(!format!("{credential:?}").contains("stored"));
    }
}
