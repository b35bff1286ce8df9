//! Account names: they become file names inside the keystore directory.

use super::KeystoreError;

const MAX_LEN: usize = 64;

/// Checks a name for a new account. Names are file names, so they are kept to a portable,
/// shell-friendly alphabet and may not look like hidden or temporary files.
pub(crate) fn validate_new(name: &str) -> Result<(), KeystoreError> {
    let invalid = |reason| {
        Err(KeystoreError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_LEN {
        return invalid("it is longer than 64 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return invalid("it starts with '.' or '-'");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(allowed) {
        return invalid("it contains a character other than letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// Whether `arg` names a file in the keystore directory rather than a path elsewhere.
/// Existing files are looked up leniently (any name without a path separator), so accounts
/// copied in by hand stay usable even if their names would not pass [`validate_new`].
pub(crate) fn is_plain_name(arg: &str) -> bool {
    !arg.is_empty()
        && arg != "."
        && arg != ".."
        && !arg.contains('/')
        && !arg.contains(std::path::MAIN_SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["alice", "bob-2", "deployer_main", "key.json", "A1"] {
            validate_new(name).unwrap();
        }
    }

    #[test]
    fn rejects_names_that_are_not_plain_file_names() {
        let long = "x".repeat(65);
        for name in [
            "",
            ".hidden",
            "-flag",
            "a/b",
            "..",
            "a b",
            "ünï",
            "a\\b",
            long.as_str(),
        ] {
            let err = validate_new(name).unwrap_err();
            assert!(
                matches!(err, KeystoreError::InvalidName { .. }),
                "{name:?}: {err:?}"
            );
        }
    }

    #[test]
    fn paths_are_not_plain_names() {
        assert!(is_plain_name("alice"));
        assert!(!is_plain_name("./alice"));
        assert!(!is_plain_name("/tmp/key.json"));
        assert!(!is_plain_name(".."));
        assert!(!is_plain_name(""));
    }
}
