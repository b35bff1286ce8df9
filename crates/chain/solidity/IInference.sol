// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger Inference: prepaid OPEN deposits that pay for model inference
/// @notice Stateful precompile at 0x0000000000000000000000000000000000000f05.
/// A caller of OpenLoRA pays from a deposit held here. It names the serving operators it
/// trusts to report its usage; only the Settlement module (0x…0f07), settling a batch an
/// approved operator submitted, can charge the deposit. Withdrawing takes two steps:
/// `requestWithdraw` announces an amount, and after `inference.withdraw_delay_blocks`
/// (ProtocolParams) `withdraw` pays it, so an operator always has time to settle the usage it
/// already served. Until then the announced amount can still be charged.
interface IInference {
    event Deposited(address indexed account, uint256 amount, uint256 balance);
    event OperatorSet(address indexed account, address indexed operator, bool approved);
    event WithdrawRequested(address indexed account, uint256 amount, uint64 releaseBlock);
    event Withdrawn(address indexed account, uint256 amount);
    event Charged(address indexed account, address indexed operator, uint256 amount, uint256 balance);

    error ZeroAmount();
    error InsufficientDeposit(address account, uint256 balance, uint256 requested);
    error WithdrawNotReady(uint64 releaseBlock);
    error NoWithdrawRequested();
    error NotOperator(address account, address operator);
    error NotSettlement(address caller);

    /// Adds `msg.value` to the caller's deposit and, if `operator` is not zero, approves it.
    function deposit(address operator) external payable;
    function setOperator(address operator, bool approved) external;
    /// Announces a withdrawal of `amount` (replacing any earlier announcement).
    function requestWithdraw(uint256 amount) external;
    /// Pays the announced amount (at most what is left of the deposit) once released.
    function withdraw() external;
    /// Settlement only: moves `amount` of `account`'s deposit to the Settlement module.
    function charge(address account, address operator, uint256 amount) external;

    function depositOf(address account) external view returns (uint256 balance, uint256 withdrawRequested, uint64 releaseBlock);
    function isOperator(address account, address operator) external view returns (bool);
}
