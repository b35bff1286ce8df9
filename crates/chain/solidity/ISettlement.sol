// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger Settlement: inference fees paid out by Proof of Attribution
/// @notice Stateful precompile at 0x0000000000000000000000000000000000000f07.
/// A serving operator submits batches of usage records. For each record the chain computes
/// the fee itself — (promptTokens + completionTokens) × the model's price per 1,000 tokens
/// from the Models registry, rounded down — checks it against the fee the operator reports,
/// charges the caller's deposit in the Inference module (the caller must have approved the
/// operator), and splits it by the fee split in ProtocolParams (`settlement.*_bps`, changed by
/// governance):
///  - contributors: shared by the record's attribution (parts per million per contribution),
///    paid to each contribution's contributor;
///  - validators: the same parts, each shared equally by the curators who accepted that
///    contribution;
///  - model owner;
///  - treasury, which also receives every rounding remainder and the contributor and curator
///    parts of a record with no attribution.
/// Credits always equal the debit; a batch that breaks this, repeats a request id, reports a
/// wrong fee, or attributes to a contribution that is not an accepted row of one of the
/// model's training datanets reverts as a whole. Earnings accrue here and are paid by `claim`.
interface ISettlement {
    struct Share {
        uint64 contributionId;
        uint32 partsPerMillion;
    }

    struct Usage {
        bytes32 requestId;
        address account;
        uint64 modelId;
        uint64 promptTokens;
        uint64 completionTokens;
        uint256 fee;
        bytes32 responseHash;
        bytes32 attributionHash;
        Share[] shares;
    }

    event UsageSettled(bytes32 indexed requestId, address indexed account, uint64 indexed modelId, uint256 fee, bytes32 responseHash, bytes32 attributionHash);
    event BatchSettled(address indexed operator, uint64 records, uint256 total);
    event Claimed(address indexed account, uint256 amount);

    error EmptyBatch();
    error BatchTooLarge(uint64 max);
    error AlreadySettled(bytes32 requestId);
    error UnknownModel(uint64 modelId);
    error FeeMismatch(bytes32 requestId, uint256 reported, uint256 computed);
    error SharesNotWhole(bytes32 requestId, uint64 partsPerMillion);
    error TooManyShares(bytes32 requestId, uint64 max);
    error DuplicateShare(bytes32 requestId, uint64 contributionId);
    error ContributionNotPayable(bytes32 requestId, uint64 contributionId);
    error ConservationViolated(uint256 debited, uint256 credited);
    error NothingToClaim();

    /// Settles a batch; returns the total charged.
    function settle(Usage[] calldata batch) external returns (uint256 total);
    /// Pays the caller's accrued earnings.
    function claim() external returns (uint256 amount);

    function claimable(address account) external view returns (uint256);
    /// Everything an account has earned, ever.
    function earnings(address account) external view returns (uint256);
    /// Earned as contributor or curator of rows of one datanet.
    function earningsByDatanet(address account, uint64 datanetId) external view returns (uint256);
    /// Earned from the fees of one model (as contributor, curator or owner).
    function earningsByModel(address account, uint64 modelId) external view returns (uint256);
    /// Paid to the contributor of one contribution.
    function contributionEarnings(uint64 contributionId) external view returns (uint256);
    function isSettled(bytes32 requestId) external view returns (bool);
}
