//! Fixed addresses of the protocol.
//!
//! OpenLedger's modules are stateful precompiles at well-known addresses so that any EVM wallet
//! can call them and their state lives in ordinary EVM storage (covered by the state root and
//! undone by reverts). They occupy `0x…0f01` upwards, far from Ethereum's own precompiles
//! (`0x01`–`0x11`) so future Ethereum forks cannot collide with them.

use alloy_primitives::{Address, address};

/// The protocol treasury: receives every block's base fee (instead of burning it) and is spent
/// only by governance.
pub const TREASURY: Address = address!("0x0000000000000000000000000000000000000f00");

/// `ProtocolParams`: the protocol's tunable parameters, read by the chain and by services.
pub const PROTOCOL_PARAMS: Address = address!("0x0000000000000000000000000000000000000f01");

/// `Governance`: proposals voted by staked OPEN; the only account allowed to change protocol
/// parameters, spend the treasury and slash stake.
pub const GOVERNANCE: Address = address!("0x0000000000000000000000000000000000000f06");

/// `Datanets`: community datasets — creation, contributions, curation, snapshots, access.
pub const DATANETS: Address = address!("0x0000000000000000000000000000000000000f02");

/// The `Models` module: base models and published fine-tunes (`IModels.sol`).
pub const MODELS: Address = address!("0x0000000000000000000000000000000000000f03");

/// `Staking`: staked OPEN, unbonding, delegation, rewards and voting-power checkpoints
/// (`IStaking.sol`).
pub const STAKING: Address = address!("0x0000000000000000000000000000000000000f04");

/// `Inference`: prepaid OPEN deposits that pay for inference, charged only by settlement
/// (`IInference.sol`).
pub const INFERENCE: Address = address!("0x0000000000000000000000000000000000000f05");

/// `Settlement`: batches of usage records paid out by attribution and the governed fee split
/// (`ISettlement.sol`).
pub const SETTLEMENT: Address = address!("0x0000000000000000000000000000000000000f07");

/// The chain itself, as the caller of the block-start hooks it runs (revm's system address,
/// which has no key): e.g. `Governance.executeReady`.
pub const SYSTEM: Address = address!("0xfffffffffffffffffffffffffffffffffffffffe");
