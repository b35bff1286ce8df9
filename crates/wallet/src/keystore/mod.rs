//! Accounts stored as Ethereum keystore v3 files, one per account, named after the account.
//!
//! Files are the standard scrypt/AES-128-CTR format with geth's plaintext `address` field, so
//! geth, foundry and other wallets can read them, and theirs can be imported here.

mod error;
mod files;
mod format;
mod name;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use alloy_primitives::{Address, B256, hex};
use alloy_signer_local::{LocalSignerError, PrivateKeySigner};

pub use error::KeystoreError;
use files::{Reservation, TempFile};
use format::KeystoreJson;

/// A directory of keystore files (by default `~/.openledger/keystore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keystore {
    dir: PathBuf,
}

impl Keystore {
    /// A keystore in `dir`. Nothing is touched until an account is written; the directory is
    /// then created (owner-only) if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `~/.openledger/keystore`, or `None` when the home directory is unknown.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::home_dir()
            .filter(|home| !home.as_os_str().is_empty())
            .map(|home| home.join(".openledger").join("keystore"))
    }

    /// The directory holding the account files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a new random account `name`, encrypted with `password`.
    /// Returns its address and the file written. An existing account is never overwritten.
    pub fn create(&self, name: &str, password: &str) -> Result<(Address, PathBuf), KeystoreError> {
        let (reservation, path) = self.reserve(name)?;
        let (signer, _uuid) = PrivateKeySigner::new_keystore(
            &self.dir,
            &mut rand::thread_rng(),
            password,
            Some(name),
        )
        .map_err(|e| KeystoreError::Encrypt {
            path,
            reason: e.to_string(),
        })?;
        Ok((signer.address(), reservation.keep()))
    }

    /// Stores the private key given as hex (with or without `0x`) as account `name`,
    /// encrypted with `password`. Returns its address and the file written.
    pub fn import(
        &self,
        name: &str,
        private_key_hex: &str,
        password: &str,
    ) -> Result<(Address, PathBuf), KeystoreError> {
        let key = parse_private_key(private_key_hex)?;
        let (reservation, path) = self.reserve(name)?;
        let (signer, _uuid) = PrivateKeySigner::encrypt_keystore(
            &self.dir,
            &mut rand::thread_rng(),
            key,
            password,
            Some(name),
        )
        .map_err(|e| KeystoreError::Encrypt {
            path,
            reason: e.to_string(),
        })?;
        Ok((signer.address(), reservation.keep()))
    }

    /// Copies an existing keystore v3 file (geth, foundry, …) in as account `name`, byte for
    /// byte. No password is needed: the file is only checked to be well-formed keystore v3.
    /// Returns the address recorded in the file (foundry files have none) and the new path.
    pub fn import_file(
        &self,
        source: &Path,
        name: &str,
    ) -> Result<(Option<Address>, PathBuf), KeystoreError> {
        name::validate_new(name)?;
        let bytes = files::read_small(source).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => KeystoreError::FileNotFound {
                path: source.to_owned(),
            },
            io::ErrorKind::InvalidData => KeystoreError::NotAKeystore {
                path: source.to_owned(),
                reason: e.to_string(),
            },
            _ => KeystoreError::io("read", source, e),
        })?;
        let parsed = KeystoreJson::parse(&bytes).map_err(|reason| KeystoreError::NotAKeystore {
            path: source.to_owned(),
            reason,
        })?;
        let (reservation, path) = self.reserve(name)?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| KeystoreError::io("open", &path, e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| KeystoreError::io("write", &path, e))?;
        Ok((parsed.address, reservation.keep()))
    }

    /// All accounts, sorted by name, with the address each file records in plaintext (`None`
    /// for files without one, such as foundry's). Nothing is decrypted. Files that are not
    /// keystores (hidden files, notes, backups in other formats) are skipped; a missing
    /// directory simply has no accounts.
    pub fn list(&self) -> Result<Vec<(String, Option<Address>)>, KeystoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(KeystoreError::io("read keystore directory", &self.dir, e)),
        };
        let mut accounts = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| KeystoreError::io("read keystore directory", &self.dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Ok(bytes) = files::read_small(&entry.path()) else {
                continue;
            };
            if let Ok(parsed) = KeystoreJson::parse(&bytes) {
                accounts.push((name, parsed.address));
            }
        }
        accounts.sort();
        Ok(accounts)
    }

    /// Decrypts an account. `name_or_path` is an account name in this keystore, or — when it
    /// contains a path separator — the path of a keystore file anywhere (`./key.json`).
    pub fn unlock(
        &self,
        name_or_path: &str,
        password: &str,
    ) -> Result<PrivateKeySigner, KeystoreError> {
        let is_name = name::is_plain_name(name_or_path);
        let path = if is_name {
            self.dir.join(name_or_path)
        } else {
            PathBuf::from(name_or_path)
        };
        let bytes = files::read_small(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound if is_name => KeystoreError::AccountNotFound {
                name: name_or_path.to_owned(),
                dir: self.dir.clone(),
            },
            io::ErrorKind::NotFound => KeystoreError::FileNotFound { path: path.clone() },
            io::ErrorKind::InvalidData => KeystoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            },
            _ => KeystoreError::io("read keystore", &path, e),
        })?;
        let parsed = KeystoreJson::parse(&bytes).map_err(|reason| KeystoreError::Corrupt {
            path: path.clone(),
            reason,
        })?;
        let decrypted = if parsed.needs_rewrite() {
            let temp =
                TempFile::write(&std::env::temp_dir(), &parsed.to_decryptable()).map_err(|e| {
                    KeystoreError::io("write a temporary decryptable copy of", &path, e)
                })?;
            PrivateKeySigner::decrypt_keystore(temp.path(), password)
        } else {
            PrivateKeySigner::decrypt_keystore(&path, password)
        };
        let signer = decrypted.map_err(|e| {
            if is_mac_mismatch(&e) {
                KeystoreError::WrongPassword { path: path.clone() }
            } else {
                KeystoreError::Corrupt {
                    path: path.clone(),
                    reason: format!("decryption failed: {e}"),
                }
            }
        })?;
        if let Some(recorded) = parsed.address
            && recorded != signer.address()
        {
            return Err(KeystoreError::Corrupt {
                path,
                reason: format!(
                    "its address field says {recorded} but the key inside belongs to {}",
                    signer.address()
                ),
            });
        }
        Ok(signer)
    }

    /// Validates `name`, creates the directory and claims `dir/name` for a new account.
    fn reserve(&self, name: &str) -> Result<(Reservation, PathBuf), KeystoreError> {
        name::validate_new(name)?;
        files::ensure_private_dir(&self.dir)?;
        let path = self.dir.join(name);
        match Reservation::claim(path.clone()) {
            Ok((reservation, _file)) => Ok((reservation, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(KeystoreError::AccountExists {
                    name: name.to_owned(),
                    path,
                })
            }
            Err(e) => Err(KeystoreError::io("create", path, e)),
        }
    }
}

/// Whether decryption failed because the MAC did not match, i.e. the password is wrong.
///
/// `alloy-signer-local` does not re-export `eth_keystore`, so its error enum cannot be named
/// without adding that crate as a dependency; its `Debug` form is matched instead. The
/// wrong-password test fails if an upgrade changes it.
fn is_mac_mismatch(error: &LocalSignerError) -> bool {
    matches!(error, LocalSignerError::EthKeystoreError(inner) if format!("{inner:?}") == "MacMismatch")
}

/// Reads a 32-byte secp256k1 private key from hex, never echoing it in errors.
fn parse_private_key(input: &str) -> Result<B256, KeystoreError> {
    let invalid = |reason| KeystoreError::InvalidPrivateKey { reason };
    let digits = input.trim();
    let digits = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .unwrap_or(digits);
    if digits.len() != 64 {
        return Err(invalid("it is not 64 hex digits long"));
    }
    let bytes = hex::decode(digits).map_err(|_| invalid("it contains a non-hex character"))?;
    let key = B256::from_slice(&bytes);
    PrivateKeySigner::from_bytes(&key)
        .map_err(|_| invalid("it is zero or not below the secp256k1 group order"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;
    use serde_json::Value;

    /// Anvil/hardhat development account #0.
    const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const DEV_ADDRESS: Address = address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
    /// Address of the key in the `testdata/` files (anvil/hardhat account #1).
    const FIXTURE_ADDRESS: Address = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
    const FIXTURE_PASSWORD: &str = "testpassword";

    fn keystore() -> (tempfile::TempDir, Keystore) {
        let root = tempfile::tempdir().unwrap();
        let keystore = Keystore::new(root.path().join("keystore"));
        (root, keystore)
    }

    fn fixture(root: &tempfile::TempDir, name: &str) -> PathBuf {
        let contents = match name {
            "pbkdf2-old-geth-style.json" => include_str!("testdata/pbkdf2-old-geth-style.json"),
            "scrypt-foundry-style.json" => include_str!("testdata/scrypt-foundry-style.json"),
            _ => unreachable!(),
        };
        let path = root.path().join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn create_then_list_then_unlock_roundtrips() {
        let (_root, ks) = keystore();
        let (address, path) = ks.create("alice", "pw").unwrap();
        assert_eq!(path, ks.dir().join("alice"));
        assert_eq!(
            ks.list().unwrap(),
            vec![("alice".to_owned(), Some(address))]
        );
        assert_eq!(ks.unlock("alice", "pw").unwrap().address(), address);
    }

    #[test]
    fn wrong_password_is_reported_as_such() {
        let (_root, ks) = keystore();
        let (_, path) = ks.create("alice", "right").unwrap();
        let err = ks.unlock("alice", "wrong").unwrap_err();
        assert!(
            matches!(&err, KeystoreError::WrongPassword { path: p } if *p == path),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with("wrong password for keystore"),
            "{message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn create_refuses_to_overwrite_an_existing_account() {
        let (_root, ks) = keystore();
        let (address, path) = ks.create("alice", "pw").unwrap();
        let before = fs::read(&path).unwrap();
        let err = ks.create("alice", "other").unwrap_err();
        assert!(
            matches!(err, KeystoreError::AccountExists { .. }),
            "{err:?}"
        );
        let err = ks.import("alice", DEV_KEY, "other").unwrap_err();
        assert!(
            matches!(err, KeystoreError::AccountExists { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(ks.unlock("alice", "pw").unwrap().address(), address);
    }

    #[test]
    fn invalid_names_are_refused_before_touching_the_disk() {
        let (_root, ks) = keystore();
        for name in ["", "../escape", ".hidden", "a/b"] {
            let err = ks.create(name, "pw").unwrap_err();
            assert!(
                matches!(err, KeystoreError::InvalidName { .. }),
                "{name:?}: {err:?}"
            );
        }
        assert!(!ks.dir().exists());
    }

    #[test]
    fn importing_a_known_key_gives_its_known_address() {
        let (_root, ks) = keystore();
        let (address, _) = ks.import("dev", DEV_KEY, "pw").unwrap();
        assert_eq!(address, DEV_ADDRESS);
        assert_eq!(
            ks.list().unwrap(),
            vec![("dev".to_owned(), Some(DEV_ADDRESS))]
        );
        let signer = ks.unlock("dev", "pw").unwrap();
        assert_eq!(signer.address(), DEV_ADDRESS);
        assert_eq!(signer.to_bytes(), DEV_KEY.parse::<B256>().unwrap());
    }

    #[test]
    fn private_keys_are_accepted_with_or_without_0x() {
        let bare = DEV_KEY.trim_start_matches("0x");
        assert_eq!(
            parse_private_key(bare).unwrap(),
            parse_private_key(DEV_KEY).unwrap()
        );
        assert_eq!(
            parse_private_key(&format!(" {DEV_KEY}\n")).unwrap(),
            DEV_KEY.parse::<B256>().unwrap()
        );
    }

    #[test]
    fn malformed_private_keys_are_refused_without_being_echoed() {
        let typo = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcaca1d7a7c1a9e8c3f80";
        let not_hex = format!("0x{}", "zz".repeat(32));
        let zero = format!("0x{}", "00".repeat(32));
        let too_big = format!("0x{}", "ff".repeat(32));
        for key in [typo, not_hex.as_str(), zero.as_str(), too_big.as_str(), ""] {
            let err = parse_private_key(key).unwrap_err();
            assert!(
                matches!(err, KeystoreError::InvalidPrivateKey { .. }),
                "{err:?}"
            );
            if !key.is_empty() {
                assert!(
                    !err.to_string().contains(&key[2..10]),
                    "key leaked into: {err}"
                );
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn account_files_and_directory_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let (root, ks) = keystore();
        let (_, created) = ks.create("a", "pw").unwrap();
        let (_, imported) = ks.import("b", DEV_KEY, "pw").unwrap();
        let (_, copied) = ks
            .import_file(&fixture(&root, "scrypt-foundry-style.json"), "c")
            .unwrap();
        assert_eq!(mode(ks.dir()), 0o700);
        for path in [created, imported, copied] {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }

    #[test]
    fn written_files_use_the_standard_keystore_v3_field_names() {
        let (_root, ks) = keystore();
        let (address, path) = ks.import("dev", DEV_KEY, "pw").unwrap();
        let json: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        assert_eq!(json["version"], 3);
        assert!(
            json["id"].as_str().is_some_and(|id| id.len() == 36),
            "{json}"
        );
        let recorded = json["address"].as_str().unwrap();
        assert_eq!(
            recorded
                .trim_start_matches("0x")
                .parse::<Address>()
                .unwrap(),
            address
        );
        let crypto = &json["crypto"];
        assert_eq!(crypto["cipher"], "aes-128-ctr");
        assert_eq!(crypto["kdf"], "scrypt");
        assert_eq!(crypto["cipherparams"]["iv"].as_str().unwrap().len(), 32);
        assert_eq!(crypto["ciphertext"].as_str().unwrap().len(), 64);
        assert_eq!(crypto["mac"].as_str().unwrap().len(), 64);
        let kdf = &crypto["kdfparams"];
        assert_eq!(kdf["dklen"], 32);
        for param in ["n", "r", "p"] {
            assert!(
                kdf[param].as_u64().is_some_and(|v| v > 0),
                "kdfparams.{param}: {kdf}"
            );
        }
        assert_eq!(kdf["salt"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn geth_style_file_with_unprefixed_address_decrypts() {
        let (root, ks) = keystore();
        let (address, path) = ks.import("dev", DEV_KEY, "pw").unwrap();
        let mut json: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        json["address"] = Value::String(hex::encode(address));
        let geth_file = root
            .path()
            .join("UTC--2024-01-01T00-00-00.000000000Z--geth");
        fs::write(&geth_file, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
        let signer = ks.unlock(geth_file.to_str().unwrap(), "pw").unwrap();
        assert_eq!(signer.address(), DEV_ADDRESS);
    }

    #[test]
    fn files_from_other_implementations_import_and_decrypt() {
        let (root, ks) = keystore();
        let (recorded, _) = ks
            .import_file(&fixture(&root, "pbkdf2-old-geth-style.json"), "old-geth")
            .unwrap();
        assert_eq!(recorded, Some(FIXTURE_ADDRESS));
        let (recorded, _) = ks
            .import_file(&fixture(&root, "scrypt-foundry-style.json"), "foundry")
            .unwrap();
        assert_eq!(recorded, None, "foundry files carry no plaintext address");

        assert_eq!(
            ks.list().unwrap(),
            vec![
                ("foundry".to_owned(), None),
                ("old-geth".to_owned(), Some(FIXTURE_ADDRESS))
            ]
        );
        for name in ["old-geth", "foundry"] {
            assert_eq!(
                ks.unlock(name, FIXTURE_PASSWORD).unwrap().address(),
                FIXTURE_ADDRESS
            );
            let err = ks.unlock(name, "nope").unwrap_err();
            assert!(
                matches!(err, KeystoreError::WrongPassword { .. }),
                "{name}: {err:?}"
            );
        }
    }

    /// Why `unlock` rewrites some files before decrypting: with `geth-compat` enabled the
    /// library refuses keystores without an `address`. If this starts passing after an
    /// upgrade, the rewrite in `format.rs` may no longer be needed.
    #[test]
    fn library_alone_cannot_decrypt_files_without_an_address() {
        let root = tempfile::tempdir().unwrap();
        let path = fixture(&root, "scrypt-foundry-style.json");
        let err = PrivateKeySigner::decrypt_keystore(&path, FIXTURE_PASSWORD).unwrap_err();
        assert!(err.to_string().contains("address"), "{err}");
    }

    #[test]
    fn import_file_copies_the_file_byte_for_byte() {
        let (root, ks) = keystore();
        let source = fixture(&root, "pbkdf2-old-geth-style.json");
        let (_, path) = ks.import_file(&source, "copy").unwrap();
        assert_eq!(fs::read(path).unwrap(), fs::read(source).unwrap());
    }

    #[test]
    fn import_file_refuses_what_is_not_a_keystore() {
        let (root, ks) = keystore();
        let notes = root.path().join("notes.json");
        fs::write(&notes, r#"{"hello": "world"}"#).unwrap();
        let err = ks.import_file(&notes, "notes").unwrap_err();
        assert!(matches!(err, KeystoreError::NotAKeystore { .. }), "{err:?}");
        assert!(err.to_string().contains("notes.json"), "{err}");
        let err = ks
            .import_file(&root.path().join("missing.json"), "m")
            .unwrap_err();
        assert!(matches!(err, KeystoreError::FileNotFound { .. }), "{err:?}");
        assert_eq!(ks.list().unwrap(), vec![]);
    }

    #[test]
    fn list_skips_files_that_are_not_keystores() {
        let (_root, ks) = keystore();
        let (address, _) = ks.create("real", "pw").unwrap();
        fs::write(ks.dir().join("README"), "not a key").unwrap();
        fs::write(ks.dir().join("other.json"), r#"{"version": 3}"#).unwrap();
        fs::write(
            ks.dir().join(".hidden"),
            fs::read(ks.dir().join("real")).unwrap(),
        )
        .unwrap();
        fs::create_dir(ks.dir().join("subdir")).unwrap();
        assert_eq!(ks.list().unwrap(), vec![("real".to_owned(), Some(address))]);
    }

    #[test]
    fn listing_a_missing_directory_gives_no_accounts() {
        let (_root, ks) = keystore();
        assert_eq!(ks.list().unwrap(), vec![]);
    }

    #[test]
    fn unlock_tells_missing_account_from_missing_file_from_corrupt_json() {
        let (root, ks) = keystore();
        let err = ks.unlock("nobody", "pw").unwrap_err();
        assert!(
            matches!(err, KeystoreError::AccountNotFound { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("openledger wallet list"), "{err}");

        let missing = root.path().join("missing.json");
        let err = ks.unlock(missing.to_str().unwrap(), "pw").unwrap_err();
        assert!(matches!(err, KeystoreError::FileNotFound { .. }), "{err:?}");

        ks.create("broken", "pw").unwrap();
        fs::write(ks.dir().join("broken"), "{ truncated").unwrap();
        let err = ks.unlock("broken", "pw").unwrap_err();
        assert!(matches!(err, KeystoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("not JSON"), "{err}");
    }

    #[test]
    fn unlock_detects_an_address_field_that_does_not_match_the_key() {
        let (_root, ks) = keystore();
        let (_, path) = ks.create("alice", "pw").unwrap();
        let mut json: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        json["address"] = Value::String(hex::encode(DEV_ADDRESS));
        fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        let err = ks.unlock("alice", "pw").unwrap_err();
        assert!(err.to_string().contains("belongs to"), "{err}");
    }

    #[test]
    fn unlock_accepts_a_path_outside_the_keystore() {
        let (root, ks) = keystore();
        let path = fixture(&root, "scrypt-foundry-style.json");
        let signer = ks.unlock(path.to_str().unwrap(), FIXTURE_PASSWORD).unwrap();
        assert_eq!(signer.address(), FIXTURE_ADDRESS);
    }

    #[test]
    fn default_dir_is_under_the_home_directory() {
        if let Some(dir) = Keystore::default_dir() {
            assert!(dir.ends_with(".openledger/keystore"), "{}", dir.display());
        }
    }
}
