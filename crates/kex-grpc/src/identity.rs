//! The node identity key file: an Ed25519 key pair in PKCS#8 (v2, as `ring` writes it),
//! created on first start with mode 0600 and reused on every later start. The private key never
//! leaves the host; the public key is what the agent publishes in its CipherlaneNode.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// What went wrong with the identity key file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity key file {path}: {action} failed: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("identity key file {path} has mode {mode:#o}; it must not be readable by group or others: run `chmod 600 {path}`")]
    InsecureMode { path: PathBuf, mode: u32 },
    #[error("identity key file {path} is not an Ed25519 PKCS#8 key ({reason}); move it away to have a new identity created")]
    Invalid { path: PathBuf, reason: String },
    #[error("could not generate an identity key: the system random source failed")]
    Random,
    #[error("identity public key {0:?} is not 32 bytes of standard base64")]
    PublicKey(String),
}

/// This node's identity key pair and whether it was made just now.
#[derive(Debug)]
pub struct NodeIdentity {
    keypair: Ed25519KeyPair,
    created: bool,
}

fn io<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> IdentityError + 'a {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

impl NodeIdentity {
    /// Reads the key at `path`, or creates it (and its folder, mode 0700) if it does not exist.
    /// Refuses a file that group or others may read.
    pub fn load_or_create(path: &Path) -> Result<NodeIdentity, IdentityError> {
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(IdentityError::InsecureMode {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                let pkcs8 = fs::read(path).map_err(io(path, "read"))?;
                let keypair =
                    Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| IdentityError::Invalid {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })?;
                Ok(NodeIdentity {
                    keypair,
                    created: false,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(io(path, "stat")(e)),
        }
    }

    fn create(path: &Path) -> Result<NodeIdentity, IdentityError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir, "create folder"))?;
        }
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| IdentityError::Random)?;
        // Write beside the target and rename, so a crash never leaves a half-written key.
        let tmp = path.with_extension("tmp");
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp, "create"))?;
        file.write_all(pkcs8.as_ref())
            .and_then(|()| file.sync_all())
            .map_err(io(&tmp, "write"))?;
        fs::rename(&tmp, path).map_err(io(path, "rename into place"))?;
        let keypair =
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| IdentityError::Invalid {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        tracing::info!(path = %path.display(), "created a new node identity key");
        Ok(NodeIdentity {
            keypair,
            created: true,
        })
    }

    /// Whether this start created the key (the agent must then publish the new public key).
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.keypair.public_key().as_ref());
        out
    }

    /// The public key as CipherlaneNode's `spec.identityKey` holds it (standard base64).
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public_key())
    }

    /// The key pair, for `cipherlane_kex::Endpoint::new`.
    pub fn into_keypair(self) -> Ed25519KeyPair {
        self.keypair
    }
}

/// Parses a CipherlaneNode's `spec.identityKey` (standard base64 of 32 bytes).
pub fn parse_public_key_base64(text: &str) -> Result<[u8; 32], IdentityError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| IdentityError::PublicKey(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_identity_is_created_with_mode_0600_and_reused_on_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/identity.pk8");
        let first = NodeIdentity::load_or_create(&path).expect("create");
        assert!(first.created());
        let mode = fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().expect("parent"))
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let second = NodeIdentity::load_or_create(&path).expect("reload");
        assert!(!second.created());
        assert_eq!(first.public_key(), second.public_key());
        assert_eq!(
            parse_public_key_base64(&second.public_key_base64()).expect("parses"),
            first.public_key()
        );
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused_with_the_fix_in_the_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity.pk8");
        NodeIdentity::load_or_create(&path).expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = NodeIdentity::load_or_create(&path).expect_err("insecure");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_corrupt_key_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity.pk8");
        fs::write(&path, b"garbage").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = NodeIdentity::load_or_create(&path).expect_err("corrupt");
        assert!(matches!(err, IdentityError::Invalid { .. }), "{err}");
        assert_eq!(fs::read(&path).expect("still there"), b"garbage");
    }

    #[test]
    fn public_keys_of_the_wrong_length_or_alphabet_are_refused() {
        assert!(parse_public_key_base64("AAAA").is_err());
        assert!(parse_public_key_base64("not base64!").is_err());
    }
}
