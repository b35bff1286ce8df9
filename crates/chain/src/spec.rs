//! The fixed rules of a chain: its id, its EVM revision and the EIP-1559 fee market.

use alloy_eips::eip1559::BaseFeeParams;
use openledger_primitives::{Address, addresses::TREASURY, units::GWEI};
use revm::primitives::hardfork::SpecId;

/// Rules fixed for the life of a chain. Tunable values (gas limit, base-fee parameters) live in
/// `ProtocolParams` storage instead so governance can change them.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    pub chain_id: u64,
    /// EVM revision. Prague: the latest revision wallets and compilers target by default.
    pub hardfork: SpecId,
    /// Base fee of the genesis block.
    pub initial_base_fee: u64,
    /// Receives every transaction's base fee (Ethereum burns it).
    pub treasury: Address,
    /// Largest accepted raw transaction, like geth's pool limit.
    pub max_tx_bytes: usize,
}

impl ChainSpec {
    pub fn devnet(chain_id: u64) -> Self {
        Self {
            chain_id,
            hardfork: SpecId::PRAGUE,
            initial_base_fee: GWEI as u64,
            treasury: TREASURY,
            max_tx_bytes: 128 * 1024,
        }
    }
}

/// The EIP-1559 base fee of the block after a parent with the given gas use.
pub fn next_base_fee(
    parent_gas_used: u64,
    parent_gas_limit: u64,
    parent_base_fee: u64,
    max_change_denominator: u64,
    elasticity_multiplier: u64,
) -> u64 {
    let params = BaseFeeParams::new(
        max_change_denominator.max(1) as u128,
        elasticity_multiplier.max(1) as u128,
    );
    params.next_block_base_fee(parent_gas_used, parent_gas_limit, parent_base_fee)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_fee_falls_an_eighth_after_an_empty_block_and_rises_after_a_full_one() {
        assert_eq!(
            next_base_fee(0, 30_000_000, 1_000_000_000, 8, 2),
            875_000_000
        );
        assert_eq!(
            next_base_fee(30_000_000, 30_000_000, 1_000_000_000, 8, 2),
            1_125_000_000
        );
        assert_eq!(
            next_base_fee(15_000_000, 30_000_000, 1_000_000_000, 8, 2),
            1_000_000_000
        );
    }
}
