// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger Datanets: community datasets recorded on chain
/// @notice Stateful precompile at 0x0000000000000000000000000000000000000f02.
/// Rows live off chain, content-addressed; the chain records who created a datanet, who
/// contributed which rows (by Merkle root), which curators reviewed them, the immutable
/// snapshots published from accepted rows, and who may read a permissioned datanet.
/// Schemas: 0 plain text, 1 instruction/response, 2 chat messages.
/// Contribution status: 0 pending, 1 accepted, 2 rejected, 3 removed for fraud (by governance).
interface IDatanets {
    event DatanetCreated(uint64 indexed datanetId, address indexed owner, string name, string license, uint8 schema, bool permissioned, bool allowlistOnly, uint16 reviewQuorum);
    event CuratorSet(uint64 indexed datanetId, address indexed curator, bool enabled);
    event ContributorSet(uint64 indexed datanetId, address indexed contributor, bool allowed);
    event DatanetClosed(uint64 indexed datanetId);
    event Contributed(uint64 indexed contributionId, uint64 indexed datanetId, address indexed contributor, bytes32 contentRoot, uint64 rowCount, uint64 byteCount);
    event Reviewed(uint64 indexed contributionId, address indexed curator, bool accept, uint16 reasonCode);
    event ContributionAccepted(uint64 indexed contributionId, uint64 indexed datanetId);
    event ContributionRejected(uint64 indexed contributionId, uint64 indexed datanetId);
    event ContributionRemoved(uint64 indexed contributionId, uint64 indexed datanetId);
    event SnapshotPublished(uint64 indexed snapshotId, uint64 indexed datanetId, bytes32 root, uint64 rowCount, uint64 parentSnapshotId);
    event AccessRequested(uint64 indexed datanetId, address indexed requester, string purpose);
    event AccessGranted(uint64 indexed datanetId, address indexed grantee, uint64 expiresAt);
    event AccessRevoked(uint64 indexed datanetId, address indexed grantee);

    error UnknownDatanet(uint64 datanetId);
    error UnknownContribution(uint64 contributionId);
    error UnknownSnapshot(uint64 snapshotId);
    error NotOwner(address caller);
    error NotCurator(address caller);
    error NotAllowedToContribute(address caller);
    error DatanetIsClosed(uint64 datanetId);
    error AlreadyReviewed(uint64 contributionId, address curator);
    error ContributionNotPending(uint64 contributionId);
    error WrongFee(uint256 paid, uint256 required);
    error InvalidArgument(string what);
    error NotGovernance(address caller);
    error ContributionNotAccepted(uint64 contributionId);

    /// Creates a datanet; `msg.value` must equal ProtocolParams' `datanet.creation_fee`, which
    /// goes to the treasury. The caller becomes the owner.
    function createDatanet(string calldata name, bytes32 descriptionHash, string calldata license, uint8 schema, bool permissioned, bool allowlistOnly, uint16 reviewQuorum, address[] calldata curators) external payable returns (uint64 datanetId);
    function setCurator(uint64 datanetId, address curator, bool enabled) external;
    function setContributor(uint64 datanetId, address contributor, bool allowed) external;
    function closeDatanet(uint64 datanetId) external;

    /// Records a contribution: the Merkle root of its rows' hashes, how many rows and bytes.
    function contribute(uint64 datanetId, bytes32 contentRoot, uint64 rowCount, uint64 byteCount) external returns (uint64 contributionId);
    /// A curator's verdict; the contribution is accepted (or rejected) once `reviewQuorum`
    /// curators agree.
    function review(uint64 contributionId, bool accept, uint16 reasonCode) external;

    /// The owner publishes an immutable snapshot over accepted rows.
    function publishSnapshot(uint64 datanetId, bytes32 root, uint64 rowCount, uint64 parentSnapshotId) external returns (uint64 snapshotId);

    /// Governance only: removes an accepted contribution found fraudulent (it earns nothing
    /// from then on) and returns the curators who accepted it, whom governance then slashes.
    function removeForFraud(uint64 contributionId) external returns (address[] memory curators);

    function requestAccess(uint64 datanetId, string calldata purpose) external;
    /// Grants read access until `expiresAt` (unix seconds).
    function grantAccess(uint64 datanetId, address grantee, uint64 expiresAt) external;
    function revokeAccess(uint64 datanetId, address grantee) external;

    function hasAccess(uint64 datanetId, address who) external view returns (bool);
    function isCurator(uint64 datanetId, address who) external view returns (bool);
    function reviewedBy(uint64 contributionId, address curator) external view returns (uint8 verdict);
    function datanetCount() external view returns (uint64);
    function contributionCount() external view returns (uint64);
    function snapshotCount() external view returns (uint64);
    function getDatanet(uint64 datanetId) external view returns (address owner, string memory name, bytes32 descriptionHash, string memory license, uint8 schema, bool permissioned, bool allowlistOnly, uint16 reviewQuorum, uint32 curatorCount, bool closed);
    function getContribution(uint64 contributionId) external view returns (uint64 datanetId, address contributor, bytes32 contentRoot, uint64 rowCount, uint64 byteCount, uint8 status, uint16 approvals, uint16 rejections);
    function getSnapshot(uint64 snapshotId) external view returns (uint64 datanetId, bytes32 root, uint64 rowCount, uint64 parentSnapshotId, uint64 blockNumber);
}
