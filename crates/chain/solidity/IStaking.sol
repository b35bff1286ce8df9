// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger Staking: staked OPEN, delegation, rewards and voting power
/// @notice Stateful precompile at 0x0000000000000000000000000000000000000f04.
/// Stake is native OPEN sent with `stake()`. `unstake` moves stake into an unbonding queue for
/// `staking.unbonding_blocks` (ProtocolParams); `withdraw` pays out what has matured.
/// An account's voting power is its own stake, unless delegated away, plus the stake delegated
/// to it; power is checkpointed per block so governance reads it at a proposal's snapshot.
/// Rewards sent with `fundRewards()` are shared pro rata over the bonded stake at that moment
/// (a reward-per-token accumulator, O(1) per call) and paid by `claimRewards()`.
/// Only governance (0x0000000000000000000000000000000000000f06) may `slash`.
interface IStaking {
    event Staked(address indexed staker, uint256 amount, uint256 staked);
    event UnstakeRequested(address indexed staker, uint256 amount, uint64 releaseBlock);
    event Withdrawn(address indexed staker, uint256 amount);
    event DelegateChanged(address indexed staker, address indexed fromDelegate, address indexed toDelegate, uint256 amount);
    event VotingPowerChanged(address indexed account, uint256 oldPower, uint256 newPower);
    event RewardsFunded(address indexed funder, uint256 amount, uint256 rewardPerToken);
    event BlockRewardsAccrued(uint64 indexed blockNumber, uint256 amount, uint256 rewardPerToken);
    event RewardsClaimed(address indexed staker, uint256 amount);
    event Slashed(address indexed account, uint256 amount, uint256 fractionBps);

    error ZeroAmount();
    error InsufficientStake(uint256 staked, uint256 requested);
    error NothingToWithdraw(uint64 nextReleaseBlock);
    error NothingToClaim();
    error NoStakers();
    error AlreadyDelegated(address delegatee);
    error TooManyUnbonding(uint64 max);
    error NotGovernance(address caller);
    error NotSystem(address caller);
    error FutureBlock(uint64 blockNumber, uint64 currentBlock);

    /// Stakes the OPEN sent with the call.
    function stake() external payable;
    /// Starts unbonding `amount` of the caller's stake; it stops counting for voting power and
    /// rewards now, and can be withdrawn after the unbonding period.
    function unstake(uint256 amount) external;
    /// Pays out every unbonding request that has matured, oldest first.
    function withdraw() external returns (uint256 amount);
    /// Gives the caller's voting power to `to` (a validator or curator); `address(0)` or the
    /// caller's own address takes it back. Rewards stay with the staker.
    function delegate(address to) external;
    /// Pays the caller's accrued rewards.
    function claimRewards() external returns (uint256 amount);
    /// Shares the OPEN sent with the call among current stakers, pro rata.
    function fundRewards() external payable;
    /// Run by the chain (caller 0xff…fe) at the end of every block: accrues
    /// `staking.block_fee_share_bps` of the block's base fees to the stakers (nothing when
    /// nobody stakes) and returns the amount, which the chain then moves here instead of to
    /// the treasury. Reverts for any other caller.
    function accrueBlockRewards(uint256 blockFees) external returns (uint256 accrued);
    /// Governance only: moves `staking.slash_bps` of the account's bonded and unbonding stake
    /// to the treasury.
    function slash(address account) external returns (uint256 amount);

    function stakeOf(address account) external view returns (uint256 staked, address delegatee, uint256 unbonding, uint256 withdrawable, uint256 pendingRewards);
    function unbondingRequests(address account) external view returns (uint256[] memory amounts, uint64[] memory releaseBlocks);
    function votingPower(address account) external view returns (uint256);
    /// Voting power at the end of a past block.
    function votingPowerAt(address account, uint64 blockNumber) external view returns (uint256);
    function totalStaked() external view returns (uint256);
    function totalStakedAt(uint64 blockNumber) external view returns (uint256);
    /// The reward accumulator: OPEN wei earned per staked wei, scaled by 1e18.
    function rewardPerToken() external view returns (uint256);
}
