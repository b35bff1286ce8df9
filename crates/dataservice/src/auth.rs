//! Signed data requests (EIP-191 `personal_sign`), for reading permissioned datanets.
//!
//! A caller proves who they are by signing a short text naming the exact request and an
//! expiry, with the key of the account that holds the on-chain grant. Binding method, path and
//! query stops a signature for one read being replayed on another; the expiry (at most
//! [`MAX_VALIDITY_SECS`] ahead) bounds replays of the same read. Any EVM wallet can produce the
//! signature (`cast wallet sign`, MetaMask's `personal_sign`).

use alloy_primitives::{Address, Signature};

pub const ADDRESS_HEADER: &str = "x-openledger-address";
pub const EXPIRES_HEADER: &str = "x-openledger-expires";
pub const SIGNATURE_HEADER: &str = "x-openledger-signature";

/// How far ahead a signed request may expire.
pub const MAX_VALIDITY_SECS: u64 = 3600;

/// The text that is signed for a request.
pub fn request_message(
    method: &str,
    path_and_query: &str,
    address: Address,
    expires: u64,
) -> String {
    format!(
        "OpenLedger data request\n{method} {path_and_query}\naddress: {}\nexpires: {expires}",
        address.to_checksum(None)
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this datanet is permissioned: sign the request (headers {ADDRESS_HEADER}, {EXPIRES_HEADER}, {SIGNATURE_HEADER}; `openledger datanet` does it with --account)"
    )]
    Missing,
    #[error("header {0} is malformed: {1}")]
    Malformed(&'static str, String),
    #[error("the signed request expired at {expires} (now {now}); sign it again")]
    Expired { expires: u64, now: u64 },
    #[error(
        "the signed request expires too far ahead ({expires}); at most {MAX_VALIDITY_SECS} s from now"
    )]
    TooFarAhead { expires: u64 },
    #[error("the signature was made by {recovered}, not by {claimed}")]
    WrongSigner {
        claimed: Address,
        recovered: Address,
    },
}

/// The three header values of a signed request, as received.
#[derive(Debug, Clone, Default)]
pub struct SignedHeaders<'a> {
    pub address: Option<&'a str>,
    pub expires: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Checks a signed request and returns the signer. `Ok(None)` when the request is unsigned.
pub fn verify(
    method: &str,
    path_and_query: &str,
    headers: &SignedHeaders<'_>,
    now: u64,
) -> Result<Option<Address>, AuthError> {
    let (Some(address), Some(expires), Some(signature)) =
        (headers.address, headers.expires, headers.signature)
    else {
        if headers.address.is_some() || headers.expires.is_some() || headers.signature.is_some() {
            return Err(AuthError::Missing);
        }
        return Ok(None);
    };
    let claimed: Address = address
        .trim()
        .parse()
        .map_err(|e| AuthError::Malformed(ADDRESS_HEADER, format!("{e}")))?;
    let expires: u64 = expires
        .trim()
        .parse()
        .map_err(|e| AuthError::Malformed(EXPIRES_HEADER, format!("{e}")))?;
    if expires <= now {
        return Err(AuthError::Expired { expires, now });
    }
    if expires > now + MAX_VALIDITY_SECS {
        return Err(AuthError::TooFarAhead { expires });
    }
    let bytes = hex::decode(signature.trim().trim_start_matches("0x"))
        .map_err(|e| AuthError::Malformed(SIGNATURE_HEADER, e.to_string()))?;
    let signature = Signature::from_raw(&bytes)
        .map_err(|e| AuthError::Malformed(SIGNATURE_HEADER, e.to_string()))?;
    let message = request_message(method, path_and_query, claimed, expires);
    let recovered = signature
        .recover_address_from_msg(message.as_bytes())
        .map_err(|e| AuthError::Malformed(SIGNATURE_HEADER, e.to_string()))?;
    if recovered != claimed {
        return Err(AuthError::WrongSigner { claimed, recovered });
    }
    Ok(Some(claimed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    fn signed(signer: &PrivateKeySigner, path: &str, expires: u64) -> (String, String, String) {
        let message = request_message("GET", path, signer.address(), expires);
        let sig = signer.sign_message_sync(message.as_bytes()).unwrap();
        (
            signer.address().to_string(),
            expires.to_string(),
            format!("0x{}", hex::encode(sig.as_bytes())),
        )
    }

    fn check(
        path: &str,
        h: &(String, String, String),
        now: u64,
    ) -> Result<Option<Address>, AuthError> {
        verify(
            "GET",
            path,
            &SignedHeaders {
                address: Some(&h.0),
                expires: Some(&h.1),
                signature: Some(&h.2),
            },
            now,
        )
    }

    #[test]
    fn a_signed_request_names_its_signer_and_nothing_else_passes() {
        let alice = PrivateKeySigner::random();
        let bob = PrivateKeySigner::random();
        let h = signed(&alice, "/v1/snapshots/1/rows", 1_000);
        assert_eq!(
            check("/v1/snapshots/1/rows", &h, 900),
            Ok(Some(alice.address()))
        );

        // Replayed on another path, after expiry, or claimed by someone else: refused.
        assert!(matches!(
            check("/v1/snapshots/2/rows", &h, 900),
            Err(AuthError::WrongSigner { .. })
        ));
        assert!(matches!(
            check("/v1/snapshots/1/rows", &h, 1_000),
            Err(AuthError::Expired { .. })
        ));
        let forged = (bob.address().to_string(), h.1.clone(), h.2.clone());
        assert!(matches!(
            check("/v1/snapshots/1/rows", &forged, 900),
            Err(AuthError::WrongSigner { .. })
        ));
        let far = signed(&alice, "/x", 100_000);
        assert!(matches!(
            check("/x", &far, 900),
            Err(AuthError::TooFarAhead { .. })
        ));
        let garbage = (h.0.clone(), h.1.clone(), "0x1234".to_string());
        assert!(matches!(
            check("/v1/snapshots/1/rows", &garbage, 900),
            Err(AuthError::Malformed(..))
        ));
    }

    #[test]
    fn unsigned_requests_are_anonymous_and_partial_ones_are_errors() {
        assert_eq!(verify("GET", "/", &SignedHeaders::default(), 0), Ok(None));
        let partial = SignedHeaders {
            address: Some("0x0000000000000000000000000000000000000001"),
            ..SignedHeaders::default()
        };
        assert_eq!(verify("GET", "/", &partial, 0), Err(AuthError::Missing));
    }
}
