//! Typed access to a module's EVM storage.
//!
//! Records live at slots derived like Solidity mappings, `keccak256(tag ‖ key…)`, with a
//! record's fields at consecutive slots after its base, so every value can be read with
//! `eth_getStorageAt` and proven with `openledger_getProof`. Strings are stored as a length
//! word followed by 32-byte chunks at `keccak256(slot) + i`.

use super::{ModuleError, ModuleHost};
use openledger_primitives::{Address, B256, U256, keccak256};

/// The slot of `tag` keyed by `parts` (a record's base slot, or a mapping entry).
pub fn slot(tag: &str, parts: &[&[u8]]) -> U256 {
    let mut bytes = Vec::with_capacity(tag.len() + 32 * parts.len());
    bytes.extend_from_slice(tag.as_bytes());
    for p in parts {
        bytes.extend_from_slice(p);
    }
    U256::from_be_bytes(keccak256(bytes).0)
}

/// Field `i` of the record at `base`.
pub fn field(base: U256, i: u64) -> U256 {
    base.wrapping_add(U256::from(i))
}

pub fn load_u64(host: &mut dyn ModuleHost, slot: U256) -> Result<u64, ModuleError> {
    Ok(host.sload(slot)?.saturating_to())
}

pub fn store_u64(host: &mut dyn ModuleHost, slot: U256, value: u64) -> Result<(), ModuleError> {
    host.sstore(slot, U256::from(value))
}

pub fn load_address(host: &mut dyn ModuleHost, slot: U256) -> Result<Address, ModuleError> {
    Ok(Address::from_word(B256::from(host.sload(slot)?)))
}

pub fn store_address(
    host: &mut dyn ModuleHost,
    slot: U256,
    value: Address,
) -> Result<(), ModuleError> {
    host.sstore(slot, U256::from_be_bytes(value.into_word().0))
}

pub fn load_b256(host: &mut dyn ModuleHost, slot: U256) -> Result<B256, ModuleError> {
    Ok(B256::from(host.sload(slot)?))
}

pub fn store_b256(host: &mut dyn ModuleHost, slot: U256, value: B256) -> Result<(), ModuleError> {
    host.sstore(slot, U256::from_be_bytes(value.0))
}

pub fn store_string(host: &mut dyn ModuleHost, slot: U256, value: &str) -> Result<(), ModuleError> {
    let bytes = value.as_bytes();
    host.sstore(slot, U256::from(bytes.len()))?;
    let data = U256::from_be_bytes(keccak256(slot.to_be_bytes::<32>()).0);
    for (i, chunk) in bytes.chunks(32).enumerate() {
        let mut word = [0u8; 32];
        word[..chunk.len()].copy_from_slice(chunk);
        host.sstore(field(data, i as u64), U256::from_be_bytes(word))?;
    }
    Ok(())
}

pub fn load_string(host: &mut dyn ModuleHost, slot: U256) -> Result<String, ModuleError> {
    let len: usize = host.sload(slot)?.saturating_to();
    let data = U256::from_be_bytes(keccak256(slot.to_be_bytes::<32>()).0);
    let mut bytes = Vec::with_capacity(len);
    for i in 0..len.div_ceil(32) {
        let word = host.sload(field(data, i as u64))?.to_be_bytes::<32>();
        let take = (len - bytes.len()).min(32);
        bytes.extend_from_slice(&word[..take]);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
