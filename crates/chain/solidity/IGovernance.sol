// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger Governance: proposals voted by staked OPEN
/// @notice Stateful precompile at 0x0000000000000000000000000000000000000f06, the only account
/// that may change ProtocolParams (0x…0f01), spend the treasury (0x…0f00) and slash stake
/// (Staking, 0x…0f04).
/// A proposal changes parameters, spends from the treasury, slashes accounts, any mix of these,
/// or nothing (text only). Its proposer sends `governance.proposal_deposit`, refunded unless the
/// proposal is vetoed. Votes weigh the voter's Staking power at the snapshot block (the block
/// before the proposal) and may be changed until the end block. After the voting period, a
/// proposal passes if the votes reach `governance.quorum_bps` of the snapshot's staked OPEN,
/// veto votes do not exceed `governance.veto_threshold_bps` of all votes, and for-votes exceed
/// `governance.threshold_bps` of for + against + veto. Rules are fixed when the proposal is made.
/// Once `governance.timelock_blocks` have passed, the chain executes a passed proposal itself at
/// the start of the next block (`executeReady`), and anyone may `execute` it too; all of its
/// actions apply in one call or none does. A proposal whose automatic execution fails (e.g. the
/// treasury is short) changes nothing, is reported by `AutoExecutionFailed` and stays
/// executable by hand.
interface IGovernance {
    // Vote choices (`support`): 0 against, 1 for, 2 abstain, 3 veto.
    // Proposal states (`state`): 0 active, 1 defeated, 2 vetoed, 3 queued (passed, timelock
    // running), 4 executable, 5 executed.

    event ProposalCreated(uint64 indexed proposalId, address indexed proposer, string description, uint64 snapshotBlock, uint64 endBlock, uint256 deposit);
    event VoteCast(uint64 indexed proposalId, address indexed voter, uint8 support, uint256 weight, bool changed);
    event ProposalExecuted(uint64 indexed proposalId);
    event TreasurySpent(uint64 indexed proposalId, address indexed to, uint256 amount);
    event DepositRefunded(uint64 indexed proposalId, address indexed proposer, uint256 amount);
    event DepositForfeited(uint64 indexed proposalId, uint256 amount);
    event AutoExecutionFailed(uint64 indexed proposalId, bytes reason);

    error WrongDeposit(uint256 required, uint256 paid);
    error UnknownParam(string name);
    error ParamOutOfRange(string name, uint256 value, uint256 min, uint256 max);
    error DuplicateParam(string name);
    error FeeSplitNotWhole(uint256 sumBps);
    error InvalidProposal(string what);
    error UnknownProposal(uint64 proposalId);
    error InvalidSupport(uint8 support);
    error VotingClosed(uint64 proposalId, uint64 endBlock);
    error NoVotingPower(address voter, uint64 snapshotBlock);
    error AlreadyVoted(uint64 proposalId, address voter, uint8 support);
    error VotingNotEnded(uint64 proposalId, uint64 endBlock);
    error NotExecutable(uint64 proposalId, uint8 state, uint64 executableBlock);
    error DepositAlreadySettled(uint64 proposalId);
    error TreasuryInsufficient(uint256 balance, uint256 needed);
    error NotSystem(address caller);

    /// Creates a proposal; send exactly `governance.proposal_deposit` with it.
    /// `paramNames[i]` is set to `paramValues[i]`; `spendTo[i]` receives `spendAmounts[i]` wei
    /// from the treasury; every account in `slashAccounts` is slashed.
    function propose(string calldata description, string[] calldata paramNames, uint256[] calldata paramValues, address[] calldata spendTo, uint256[] calldata spendAmounts, address[] calldata slashAccounts) external payable returns (uint64 proposalId);
    /// Creates a proposal to remove accepted contributions found fraudulent: when it executes,
    /// each is marked removed in Datanets (settlement pays it nothing more) and every curator
    /// who accepted it is slashed `staking.slash_bps` of their stake. Same deposit and voting.
    function proposeRemoval(string calldata description, uint64[] calldata contributionIds) external payable returns (uint64 proposalId);
    /// Votes (or changes the caller's vote) until the end block.
    function vote(uint64 proposalId, uint8 support) external;
    /// Applies a passed proposal after its timelock, atomically, and refunds its deposit.
    function execute(uint64 proposalId) external;
    /// Run by the chain (caller 0xff…fe) at the start of every block: executes the proposals
    /// whose timelock has ended and settles the deposits of those that failed. Reverts for any
    /// other caller.
    function executeReady() external;
    /// After voting ends: refunds the deposit to the proposer, or sends it to the treasury if
    /// the proposal was vetoed.
    function settleDeposit(uint64 proposalId) external;

    function proposalCount() external view returns (uint64);
    function getProposal(uint64 proposalId) external view returns (address proposer, string memory description, uint8 state, uint64 snapshotBlock, uint64 endBlock, uint64 executableBlock, uint256 forVotes, uint256 againstVotes, uint256 abstainVotes, uint256 vetoVotes, uint256 quorumVotes, uint256 deposit);
    function proposalActions(uint64 proposalId) external view returns (string[] memory paramNames, uint256[] memory paramValues, address[] memory spendTo, uint256[] memory spendAmounts, address[] memory slashAccounts);
    function proposalRemovals(uint64 proposalId) external view returns (uint64[] memory contributionIds);
    function getVote(uint64 proposalId, address voter) external view returns (bool voted, uint8 support, uint256 weight);
}
