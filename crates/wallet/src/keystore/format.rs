//! Reading keystore v3 JSON without decrypting it.
//!
//! The decrypter (`eth-keystore`, built with its `geth-compat` feature because the workspace
//! enables it) is strict in ways real files are not: it requires an `address` field (foundry's
//! `cast wallet new` omits it), a lowercase `crypto` key (old geth and MyEtherWallet files
//! use `Crypto`) and a UUID `id`. It also slices `iv` and the derived key without checking
//! lengths, so a damaged file could panic it. This module validates a file up front, explains
//! what is wrong in words, and can produce an equivalent JSON the decrypter accepts.

use alloy_primitives::{Address, hex};
use serde_json::{Map, Value, json};

/// Key derivation parameters of a keystore.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kdf {
    Scrypt { n: u32, r: u32, p: u32 },
    Pbkdf2 { c: u32, prf: String },
}

/// A keystore v3 file that passed validation.
#[derive(Debug, Clone)]
pub(crate) struct KeystoreJson {
    /// The plaintext `address` field, when the file has one.
    pub(crate) address: Option<Address>,
    id: String,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    mac: Vec<u8>,
    salt: Vec<u8>,
    kdf: Kdf,
    /// Whether the decrypter would reject the original text even though it is valid.
    needs_rewrite: bool,
}

impl KeystoreJson {
    /// Validates `bytes` as keystore v3 JSON; the error says what is wrong with it.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("it is not JSON ({e})"))?;
        let Value::Object(root) = value else {
            return Err("it is JSON but not an object".into());
        };
        match root.get("version") {
            Some(v) if v.as_u64() == Some(3) => {}
            Some(v) => {
                return Err(format!(
                    "it is keystore version {v}; only version 3 is supported"
                ));
            }
            None => return Err("it has no \"version\" field".into()),
        }
        let (crypto, crypto_capitalized) = match (root.get("crypto"), root.get("Crypto")) {
            (Some(Value::Object(c)), _) => (c, false),
            (None, Some(Value::Object(c))) => (c, true),
            _ => return Err("it has no \"crypto\" object".into()),
        };
        match crypto.get("cipher").and_then(Value::as_str) {
            Some("aes-128-ctr") => {}
            Some(other) => {
                return Err(format!(
                    "cipher {other:?} is not supported (only aes-128-ctr)"
                ));
            }
            None => return Err("crypto.cipher is missing".into()),
        }
        let params = crypto.get("cipherparams").and_then(Value::as_object);
        let iv = hex_field(params, "iv", "crypto.cipherparams.iv", Some(16))?;
        let ciphertext = hex_field(Some(crypto), "ciphertext", "crypto.ciphertext", Some(32))?;
        let mac = hex_field(Some(crypto), "mac", "crypto.mac", Some(32))?;
        let kdfparams = crypto
            .get("kdfparams")
            .and_then(Value::as_object)
            .ok_or("crypto.kdfparams is missing")?;
        let salt = hex_field(Some(kdfparams), "salt", "crypto.kdfparams.salt", None)?;
        if salt.is_empty() {
            return Err("crypto.kdfparams.salt is empty".into());
        }
        if u32_field(kdfparams, "dklen")? != 32 {
            return Err("crypto.kdfparams.dklen must be 32".into());
        }
        let kdf = match crypto.get("kdf").and_then(Value::as_str) {
            Some("scrypt") => {
                let n = u32_field(kdfparams, "n")?;
                if n < 2 || !n.is_power_of_two() {
                    return Err(format!("scrypt parameter n = {n} is not a power of two"));
                }
                Kdf::Scrypt {
                    n,
                    r: u32_field(kdfparams, "r")?,
                    p: u32_field(kdfparams, "p")?,
                }
            }
            Some("pbkdf2") => {
                let prf = kdfparams
                    .get("prf")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if prf != "hmac-sha256" {
                    return Err(format!(
                        "pbkdf2 prf {prf:?} is not supported (only hmac-sha256)"
                    ));
                }
                Kdf::Pbkdf2 {
                    c: u32_field(kdfparams, "c")?,
                    prf: prf.to_owned(),
                }
            }
            Some(other) => {
                return Err(format!(
                    "kdf {other:?} is not supported (only scrypt, pbkdf2)"
                ));
            }
            None => return Err("crypto.kdf is missing".into()),
        };
        let address = match root.get("address") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                s.parse::<Address>()
                    .map_err(|_| format!("address field {s:?} is not a 20-byte hex address"))?,
            ),
            Some(other) => return Err(format!("address field {other} is not a string")),
        };
        let id = root
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| is_uuid(id));
        let hex_prefixed = [
            params.and_then(|p| p.get("iv")),
            crypto.get("ciphertext"),
            crypto.get("mac"),
            kdfparams.get("salt"),
        ]
        .into_iter()
        .flatten()
        .any(|v| v.as_str().is_some_and(|s| s.starts_with("0x")));
        Ok(Self {
            address,
            id: id
                .unwrap_or("00000000-0000-0000-0000-000000000000")
                .to_owned(),
            iv,
            ciphertext,
            mac,
            salt,
            kdf,
            needs_rewrite: address.is_none() || crypto_capitalized || id.is_none() || hex_prefixed,
        })
    }

    /// Whether the decrypter would refuse the file's own text, so that [`Self::to_decryptable`]
    /// has to be decrypted instead.
    pub(crate) fn needs_rewrite(&self) -> bool {
        self.needs_rewrite
    }

    /// The same key material as JSON the decrypter accepts. A missing address is filled with
    /// zeros: the decrypter does not check it, and callers compare the real one afterwards.
    pub(crate) fn to_decryptable(&self) -> Vec<u8> {
        let kdfparams = match &self.kdf {
            Kdf::Scrypt { n, r, p } => json!({
                "dklen": 32, "n": n, "r": r, "p": p, "salt": hex::encode(&self.salt),
            }),
            Kdf::Pbkdf2 { c, prf } => json!({
                "dklen": 32, "c": c, "prf": prf, "salt": hex::encode(&self.salt),
            }),
        };
        let kdf = match self.kdf {
            Kdf::Scrypt { .. } => "scrypt",
            Kdf::Pbkdf2 { .. } => "pbkdf2",
        };
        let doc = json!({
            "address": hex::encode(self.address.unwrap_or_default()),
            "crypto": {
                "cipher": "aes-128-ctr",
                "cipherparams": { "iv": hex::encode(&self.iv) },
                "ciphertext": hex::encode(&self.ciphertext),
                "kdf": kdf,
                "kdfparams": kdfparams,
                "mac": hex::encode(&self.mac),
            },
            "id": self.id,
            "version": 3,
        });
        serde_json::to_vec(&doc).expect("a JSON value always serializes")
    }
}

fn hex_field(
    object: Option<&Map<String, Value>>,
    key: &str,
    label: &str,
    expected_len: Option<usize>,
) -> Result<Vec<u8>, String> {
    let text = object
        .and_then(|o| o.get(key))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{label} is missing"))?;
    let bytes = hex::decode(text).map_err(|_| format!("{label} is not hex"))?;
    match expected_len {
        Some(len) if bytes.len() != len => Err(format!(
            "{label} is {} bytes long, expected {len}",
            bytes.len()
        )),
        _ => Ok(bytes),
    }
}

fn u32_field(object: &Map<String, Value>, key: &str) -> Result<u32, String> {
    let value = object
        .get(key)
        .ok_or_else(|| format!("crypto.kdfparams.{key} is missing"))?;
    value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("crypto.kdfparams.{key} = {value} is not a 32-bit unsigned number"))
}

/// Whether `id` is a UUID in the hyphenated form the decrypter reads.
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;

    /// A geth-style file (no 0x on the address) with real-looking but made-up material.
    const GETH_STYLE: &str = r#"{
        "address": "f39fd6e51aad88f6f4ce6ab8827279cfffb92266",
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": { "iv": "83dbcc02d8ccb40e466191a123791e0e" },
            "ciphertext": "d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c",
            "kdf": "scrypt",
            "kdfparams": {
                "dklen": 32, "n": 262144, "p": 1, "r": 8,
                "salt": "ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19"
            },
            "mac": "2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097"
        },
        "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
        "version": 3
    }"#;

    fn edit(f: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(GETH_STYLE).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn reads_address_of_a_geth_file_without_rewrite() {
        let ks = KeystoreJson::parse(GETH_STYLE.as_bytes()).unwrap();
        assert_eq!(
            ks.address,
            Some(address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"))
        );
        assert!(!ks.needs_rewrite());
    }

    #[test]
    fn file_without_address_is_valid_but_needs_rewrite() {
        let bytes = edit(|v| {
            v.as_object_mut().unwrap().remove("address");
        });
        let ks = KeystoreJson::parse(&bytes).unwrap();
        assert_eq!(ks.address, None);
        assert!(ks.needs_rewrite());
        let rewritten: Value = serde_json::from_slice(&ks.to_decryptable()).unwrap();
        assert_eq!(
            rewritten["address"],
            "0000000000000000000000000000000000000000"
        );
        assert_eq!(rewritten["id"], "3198bc9c-6672-5ab3-d995-4942343ae5b6");
    }

    #[test]
    fn capitalized_crypto_key_is_accepted_and_rewritten() {
        let bytes = edit(|v| {
            let o = v.as_object_mut().unwrap();
            let crypto = o.remove("crypto").unwrap();
            o.insert("Crypto".into(), crypto);
        });
        let ks = KeystoreJson::parse(&bytes).unwrap();
        assert!(ks.needs_rewrite());
        let rewritten: Value = serde_json::from_slice(&ks.to_decryptable()).unwrap();
        assert_eq!(rewritten["crypto"]["kdfparams"]["n"], 262144);
    }

    #[test]
    fn explains_what_is_wrong_with_damaged_files() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "not JSON"),
            (b"[1,2]".to_vec(), "not an object"),
            (edit(|v| v["version"] = json!(1)), "version 1"),
            (
                edit(|v| v["crypto"]["cipher"] = json!("aes-256-gcm")),
                "aes-256-gcm",
            ),
            (
                edit(|v| v["crypto"]["cipherparams"]["iv"] = json!("abcd")),
                "iv is 2 bytes",
            ),
            (edit(|v| v["crypto"]["mac"] = json!("zz")), "mac is not hex"),
            (edit(|v| v["crypto"]["kdf"] = json!("argon2")), "argon2"),
            (
                edit(|v| v["crypto"]["kdfparams"]["n"] = json!(1000)),
                "power of two",
            ),
            (
                edit(|v| v["crypto"]["kdfparams"]["dklen"] = json!(16)),
                "dklen",
            ),
            (edit(|v| v["address"] = json!("0x1234")), "20-byte"),
            (
                edit(|v| {
                    v.as_object_mut().unwrap().remove("crypto");
                }),
                "no \"crypto\"",
            ),
        ];
        for (bytes, expected) in cases {
            let err = KeystoreJson::parse(&bytes).unwrap_err();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn recognizes_hyphenated_uuids_only() {
        assert!(is_uuid("3198bc9c-6672-5ab3-d995-4942343ae5b6"));
        assert!(!is_uuid("3198bc9c66725ab3d9954942343ae5b6"));
        assert!(!is_uuid("not-a-uuid"));
    }
}
