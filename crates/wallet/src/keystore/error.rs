//! What can go wrong with keystore accounts, phrased for the person at the terminal.

use std::io;
use std::path::PathBuf;

/// A keystore operation failed. Messages name the file involved and what to do next.
///
/// No variant ever contains a password or private key. Underlying causes are part of the
/// message rather than [`std::error::Error::source`], so printing a chain does not repeat them.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error(
        "invalid account name {name:?}: {reason}; use 1-64 letters, digits, '-', '_' or '.', \
         not starting with '.' or '-'"
    )]
    InvalidName { name: String, reason: &'static str },

    #[error(
        "an account named {name:?} already exists ({}); choose another name or remove that \
         file first",
        path.display()
    )]
    AccountExists { name: String, path: PathBuf },

    #[error(
        "no account named {name:?} in {}; `openledger wallet list` shows the accounts there, \
         and a keystore file elsewhere can be given as a path containing '/' (e.g. ./{name})",
        dir.display()
    )]
    AccountNotFound { name: String, dir: PathBuf },

    #[error("keystore file {} does not exist; check the path", path.display())]
    FileNotFound { path: PathBuf },

    #[error(
        "wrong password for keystore {} (if the password is right, the file's ciphertext or \
         mac has been damaged)",
        path.display()
    )]
    WrongPassword { path: PathBuf },

    #[error(
        "{} is not a usable Ethereum keystore v3 file: {reason}; restore it from a backup or \
         re-import the account",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },

    #[error(
        "{} is not an Ethereum keystore v3 file: {reason}; export the account as keystore \
         JSON (e.g. `geth account new`, `cast wallet new`) or import its private key instead",
        path.display()
    )]
    NotAKeystore { path: PathBuf, reason: String },

    #[error(
        "invalid private key: {reason}; expected 32 bytes written as 64 hex digits, \
         optionally prefixed with 0x"
    )]
    InvalidPrivateKey { reason: &'static str },

    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },

    #[error("cannot write keystore {}: {reason}", path.display())]
    Encrypt { path: PathBuf, reason: String },
}

impl KeystoreError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            error,
        }
    }
}
