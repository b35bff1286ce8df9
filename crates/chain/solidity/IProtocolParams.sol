// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger protocol parameters
/// @notice Stateful precompile at 0x0000000000000000000000000000000000000f01.
/// Parameters are set in genesis and afterwards changed only by the governance module
/// (0x0000000000000000000000000000000000000f06). The chain reads them at the start of
/// every block, so a change takes effect from the next block.
interface IProtocolParams {
    /// @notice A parameter changed.
    /// @param key keccak256 of the parameter's name.
    event ParamChanged(bytes32 indexed key, string name, uint256 oldValue, uint256 newValue);

    /// @notice The value of the parameter `name`, e.g. "base_fee.max_change_denominator".
    /// Reverts with `UnknownParam(name)` for a name the protocol does not define.
    function get(string calldata name) external view returns (uint256);

    /// @notice Every parameter the protocol defines, in registry order.
    function all() external view returns (string[] memory names, uint256[] memory values);

    /// @notice Change a parameter. Only the governance module may call this; the value must
    /// lie within the parameter's bounds.
    function set(string calldata name, uint256 value) external;

    error UnknownParam(string name);
    error NotGovernance(address caller);
    error OutOfBounds(string name, uint256 value, uint256 min, uint256 max);
}
