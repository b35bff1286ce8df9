// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title OpenToken
/// @notice Small ERC-20-like token used by the OpenLedger end-to-end tests.
/// It exercises storage writes, indexed/non-indexed event topics, revert
/// reasons (string and custom error), value-bearing calls and gas burning.
///
/// Storage layout (relied upon by eth_getStorageAt assertions):
///   slot 0: name (short string, stored inline)
///   slot 1: symbol (short string, stored inline)
///   slot 2: totalSupply
///   slot 3: counter
///   slot 4: owner
///   slot 5: balanceOf mapping
///   slot 6: allowance mapping
///   slot 7: scratch mapping (used by burn)
contract OpenToken {
    string public name = "Open Test Token";
    string public symbol = "OTT";
    uint256 public totalSupply;
    uint256 public counter;
    address public owner;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    mapping(uint256 => uint256) public scratch;

    uint8 public constant decimals = 18;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event Incremented(address indexed by, uint256 indexed newValue, bytes32 note);
    event Deposit(address indexed from, uint256 amount);

    error Unauthorized(address caller);

    constructor(uint256 initialSupply) {
        owner = msg.sender;
        totalSupply = initialSupply;
        balanceOf[msg.sender] = initialSupply;
        emit Transfer(address(0), msg.sender, initialSupply);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        require(balanceOf[msg.sender] >= value, "OpenToken: transfer amount exceeds balance");
        balanceOf[msg.sender] -= value;
        balanceOf[to] += value;
        emit Transfer(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        require(allowance[from][msg.sender] >= value, "OpenToken: insufficient allowance");
        require(balanceOf[from] >= value, "OpenToken: transfer amount exceeds balance");
        allowance[from][msg.sender] -= value;
        balanceOf[from] -= value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
        return true;
    }

    function increment(bytes32 note) external returns (uint256) {
        counter += 1;
        emit Incremented(msg.sender, counter, note);
        return counter;
    }

    function mint(address to, uint256 value) external {
        if (msg.sender != owner) revert Unauthorized(msg.sender);
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    /// Always reverts with a reason string (Error(string)).
    function fail() external pure {
        revert("OpenToken: deliberate failure");
    }

    /// Writes `n` fresh storage slots; with a small gas limit it runs out of gas.
    function burn(uint256 n) external {
        uint256 base = counter * 1000;
        for (uint256 i = 0; i < n; i++) {
            scratch[base + i] = i + 1;
        }
    }

    function deposit() external payable {
        emit Deposit(msg.sender, msg.value);
    }

    function contractBalance() external view returns (uint256) {
        return address(this).balance;
    }
}
