# pragma version ~=0.4.3
"""
@title p2pinfer credit (P2PC)
@notice ERC-20 with burn; 6 decimals, so one token unit is one ledger micro-credit.
        The whole supply is minted to the deployer at construction, never after;
        nobody holds any power over the token once it is deployed.
"""

from ethereum.ercs import IERC20

implements: IERC20

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

name: public(constant(String[32])) = "p2pinfer credit"
symbol: public(constant(String[8])) = "P2PC"
decimals: public(constant(uint8)) = 6

balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
totalSupply: public(uint256)
max_supply: public(immutable(uint256))


@deploy
def __init__(initial_supply: uint256, max_supply_: uint256):
    assert initial_supply <= max_supply_, "initial supply over max supply"
    max_supply = max_supply_
    self.balanceOf[msg.sender] = initial_supply
    self.totalSupply = initial_supply
    log Transfer(sender=empty(address), receiver=msg.sender, value=initial_supply)


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "transfer to the zero address"
    # Vyper reverts on underflow, which is the insufficient-balance check.
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    allowed: uint256 = self.allowance[sender][msg.sender]
    # max_value is the usual "unlimited" allowance: not decremented, saving a store.
    if allowed != max_value(uint256):
        self.allowance[sender][msg.sender] = allowed - amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def burn(amount: uint256):
    """@notice Destroys `amount` of the caller's tokens; totalSupply falls."""
    self.balanceOf[msg.sender] -= amount
    self.totalSupply -= amount
    log Transfer(sender=msg.sender, receiver=empty(address), value=amount)
