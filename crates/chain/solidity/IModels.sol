// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger Models: the registry of base models and the fine-tunes made from datanets
/// @notice Stateful precompile at 0x0000000000000000000000000000000000000f03.
/// Weights live off chain, content-addressed (BLAKE3); the chain records which base model an
/// adapter was trained from, on which datanet snapshots, with which hyperparameters (by hash),
/// how it evaluated, who owns it and what it costs per 1,000 tokens.
/// Evaluation figures are fixed-point with three decimals (loss 1.234 is 1234).
interface IModels {
    event BaseModelRegistered(bytes32 indexed modelHash, address indexed registrant, string name);
    event ModelPublished(uint64 indexed modelId, address indexed owner, bytes32 indexed adapterHash, bytes32 baseModelHash, string name, uint256 pricePer1kTokens);
    event PriceChanged(uint64 indexed modelId, uint256 pricePer1kTokens);
    event ModelRetired(uint64 indexed modelId);

    error UnknownBaseModel(bytes32 modelHash);
    error BaseModelExists(bytes32 modelHash);
    error UnknownModel(uint64 modelId);
    error AdapterAlreadyPublished(bytes32 adapterHash, uint64 modelId);
    error UnknownSnapshot(uint64 snapshotId);
    error NotModelOwner(address caller);
    error ModelIsRetired(uint64 modelId);
    error InvalidArgument(string what);

    /// Registers a base model by the content hash of its weights file.
    function registerBaseModel(bytes32 modelHash, string calldata name) external;
    /// Publishes a fine-tune: the caller becomes its owner. Every snapshot must exist in the
    /// Datanets module; their roots are recorded with the model.
    function publishModel(string calldata name, bytes32 baseModelHash, bytes32 adapterHash, bytes32 manifestHash, uint64[] calldata snapshotIds, bytes32 hyperparamsHash, uint64 evalLossMilli, uint64 evalPerplexityMilli, uint256 pricePer1kTokens) external returns (uint64 modelId);
    function setPrice(uint64 modelId, uint256 pricePer1kTokens) external;
    function retireModel(uint64 modelId) external;

    function baseModel(bytes32 modelHash) external view returns (address registrant, string memory name, uint64 blockNumber);
    function modelCount() external view returns (uint64);
    function getModel(uint64 modelId) external view returns (address owner, string memory name, bytes32 baseModelHash, bytes32 adapterHash, bytes32 manifestHash, bytes32 hyperparamsHash, uint64 evalLossMilli, uint64 evalPerplexityMilli, uint256 pricePer1kTokens, bool retired, uint64 blockNumber);
    function modelSnapshots(uint64 modelId) external view returns (uint64[] memory snapshotIds, bytes32[] memory roots);
    function modelByAdapter(bytes32 adapterHash) external view returns (uint64 modelId);
}
