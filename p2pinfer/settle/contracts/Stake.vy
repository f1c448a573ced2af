# pragma version ~=0.4.3
"""
@title p2pinfer stake manager
@notice Providers lock credit as stake. Unbonding stake waits `unbonding_s`
        before it can be withdrawn, and stays slashable while it waits. A slash
        needs `slash_threshold` distinct staked validators to sign the slash
        digest (EIP-191); the slashed credit is burned. Locked stake earns the
        stakers' pool pro rata. No account has any power over the contract:
        every parameter is fixed at deployment.
"""

interface Credit:
    def transfer(receiver: address, amount: uint256) -> bool: nonpayable
    def transferFrom(sender: address, receiver: address, amount: uint256) -> bool: nonpayable
    def burn(amount: uint256): nonpayable

event Locked:
    staker: indexed(address)
    amount: uint256

event UnbondStarted:
    staker: indexed(address)
    amount: uint256
    release_at: uint256

event Withdrawn:
    staker: indexed(address)
    amount: uint256

event Slashed:
    provider: indexed(address)
    amount: uint256
    evidence: indexed(bytes32)

event PoolFunded:
    funder: indexed(address)
    amount: uint256

event Claimed:
    staker: indexed(address)
    amount: uint256

MAX_SIGS: constant(uint256) = 16
# Reward per unit of stake is kept scaled by this, so small pools still count.
ACC_SCALE: constant(uint256) = 10**18
# A checkpoint packs (block << AMOUNT_BITS) | amount into one word (one store).
AMOUNT_BITS: constant(uint256) = 192
AMOUNT_MASK: constant(uint256) = (1 << 192) - 1
SIGNED_PREFIX: constant(Bytes[28]) = b"\x19Ethereum Signed Message:\n32"

token: public(immutable(Credit))
unbonding_s: public(immutable(uint256))
slash_threshold: public(immutable(uint256))
validator_min_stake: public(immutable(uint256))

unbonding: public(HashMap[address, uint256])
release_at: public(HashMap[address, uint256])
evidence_used: public(HashMap[bytes32, bool])

# Locked stake lives only in checkpoints: the last one is the current amount.
# The zero address (never a caller) keys the checkpoints of the total.
TOTAL: constant(address) = empty(address)
checkpoint_count: public(HashMap[address, uint256])
checkpoints: HashMap[address, HashMap[uint256, uint256]]

# Stakers' pool: reward per stake unit (scaled), each staker's debt against it,
# rewards settled but not claimed, and funding that arrived while nobody staked.
acc_reward_per_stake: public(uint256)
reward_debt: HashMap[address, uint256]
reward_owed: HashMap[address, uint256]
reward_carry: uint256
pool_unassigned: public(uint256)


@deploy
def __init__(token_: address, unbonding_s_: uint256, slash_threshold_: uint256,
             validator_min_stake_: uint256):
    assert token_ != empty(address), "token is the zero address"
    assert slash_threshold_ >= 1 and slash_threshold_ <= MAX_SIGS, "slash threshold not 1..16"
    assert validator_min_stake_ > 0, "validator min stake is zero"
    token = Credit(token_)
    unbonding_s = unbonding_s_
    slash_threshold = slash_threshold_
    validator_min_stake = validator_min_stake_


# ---- checkpoints -------------------------------------------------------------

@internal
@view
def _amount_at(account: address, blk: uint256) -> uint256:
    count: uint256 = self.checkpoint_count[account]
    if count == 0:
        return 0
    last: uint256 = self.checkpoints[account][count - 1]
    if (last >> AMOUNT_BITS) <= blk:
        return last & AMOUNT_MASK
    if (self.checkpoints[account][0] >> AMOUNT_BITS) > blk:
        return 0
    # Invariant: checkpoint lo is at or before blk, checkpoint hi is after it.
    lo: uint256 = 0
    hi: uint256 = count - 1
    for _: uint256 in range(256):
        if hi - lo <= 1:
            break
        mid: uint256 = (lo + hi) // 2
        if (self.checkpoints[account][mid] >> AMOUNT_BITS) <= blk:
            lo = mid
        else:
            hi = mid
    return self.checkpoints[account][lo] & AMOUNT_MASK


@internal
@view
def _locked(account: address) -> uint256:
    """Locked stake of `account` now (of everyone for TOTAL)."""
    count: uint256 = self.checkpoint_count[account]
    if count == 0:
        return 0
    return self.checkpoints[account][count - 1] & AMOUNT_MASK


@internal
def _write(account: address, amount: uint256):
    # The founding supply is far below 2**192; a token deployed with more is refused here.
    assert amount <= AMOUNT_MASK, "stake too large"
    word: uint256 = (block.number << AMOUNT_BITS) | amount
    count: uint256 = self.checkpoint_count[account]
    if count > 0 and (self.checkpoints[account][count - 1] >> AMOUNT_BITS) == block.number:
        self.checkpoints[account][count - 1] = word
    else:
        self.checkpoints[account][count] = word
        self.checkpoint_count[account] = count + 1


# ---- rewards -----------------------------------------------------------------

@internal
def _settle(staker: address, locked: uint256):
    """Moves what `locked` has earned so far into the staker's owed rewards."""
    acc: uint256 = self.acc_reward_per_stake
    earned: uint256 = locked * acc // ACC_SCALE - self.reward_debt[staker]
    if earned > 0:
        self.reward_owed[staker] += earned


@internal
def _set_locked(staker: address, old: uint256, new: uint256):
    """Changes a staker's locked stake: rewards settled first, then checkpoints."""
    self._settle(staker, old)
    self.reward_debt[staker] = new * self.acc_reward_per_stake // ACC_SCALE
    self._write(staker, new)
    self._write(TOTAL, self._locked(TOTAL) + new - old)


# ---- staking -----------------------------------------------------------------

@external
def lock(amount: uint256):
    """@notice Locks `amount` of the caller's credit (approve this contract first)."""
    assert amount > 0, "nothing to lock"
    old: uint256 = self._locked(msg.sender)
    self._set_locked(msg.sender, old, old + amount)
    assert extcall token.transferFrom(msg.sender, self, amount)
    log Locked(staker=msg.sender, amount=amount)


@external
def begin_unbond(amount: uint256):
    """@notice Moves `amount` from locked to the caller's unbonding lot and restarts its clock."""
    old: uint256 = self._locked(msg.sender)
    assert amount > 0, "nothing to unbond"
    assert amount <= old, "not enough locked stake"
    self._set_locked(msg.sender, old, old - amount)
    self.unbonding[msg.sender] += amount
    release: uint256 = block.timestamp + unbonding_s
    self.release_at[msg.sender] = release
    log UnbondStarted(staker=msg.sender, amount=amount, release_at=release)


@external
def withdraw():
    """@notice Pays the caller's unbonding lot back once its release time has come."""
    amount: uint256 = self.unbonding[msg.sender]
    assert amount > 0, "nothing unbonding"
    assert block.timestamp >= self.release_at[msg.sender], "still unbonding"
    self.unbonding[msg.sender] = 0
    self.release_at[msg.sender] = 0
    assert extcall token.transfer(msg.sender, amount)
    log Withdrawn(staker=msg.sender, amount=amount)


@external
@view
def stake_of(staker: address) -> uint256:
    """@notice Locked stake now (unbonding stake not counted)."""
    if staker == TOTAL:
        return 0
    return self._locked(staker)


@external
@view
def stake_at(staker: address, blk: uint256) -> uint256:
    """@notice Locked stake at the end of block `blk`."""
    if staker == TOTAL:
        return 0
    return self._amount_at(staker, blk)


@external
@view
def total_stake_at(blk: uint256) -> uint256:
    """@notice All locked stake at the end of block `blk`."""
    return self._amount_at(TOTAL, blk)


@external
@view
def total_stake() -> uint256:
    """@notice All locked stake now."""
    return self._locked(TOTAL)


# ---- slashing ----------------------------------------------------------------

@internal
@pure
def _recover(digest: bytes32, sig: Bytes[65]) -> address:
    """The EIP-191 signer of `digest`, or the zero address if `sig` is malformed."""
    if len(sig) != 65:
        return empty(address)
    signed: bytes32 = keccak256(concat(SIGNED_PREFIX, digest))
    r: uint256 = extract32(sig, 0, output_type=uint256)
    s: uint256 = extract32(sig, 32, output_type=uint256)
    v: uint256 = convert(slice(sig, 64, 1), uint256)
    return ecrecover(signed, v, r, s)


@external
@view
def slash_digest(provider: address, amount: uint256, evidence: bytes32) -> bytes32:
    """@notice The digest validators sign (EIP-191) to slash `provider` by `amount`."""
    return keccak256(abi_encode(self, chain.id, provider, amount, evidence))


@external
def slash(provider: address, amount: uint256, evidence: bytes32,
          sigs: DynArray[Bytes[65], MAX_SIGS]) -> uint256:
    """
    @notice Burns up to `amount` of `provider`'s stake, locked first, then unbonding.
            Counts signatures by distinct accounts, other than the provider, with
            locked stake >= validator_min_stake; needs slash_threshold of them.
    @return The amount taken and burned.
    """
    # The zero address keys the total: it must never be slashed as an account.
    assert provider != TOTAL, "provider is the zero address"
    assert not self.evidence_used[evidence], "evidence already used"
    digest: bytes32 = keccak256(abi_encode(self, chain.id, provider, amount, evidence))
    signers: DynArray[address, MAX_SIGS] = []
    for sig: Bytes[65] in sigs:
        signer: address = self._recover(digest, sig)
        # A signature that breaks a rule is not counted rather than failing the call.
        if signer == empty(address) or signer == provider or signer in signers:
            continue
        if self._locked(signer) < validator_min_stake:
            continue
        signers.append(signer)
    assert len(signers) >= slash_threshold, "not enough validator signatures"
    self.evidence_used[evidence] = True

    locked: uint256 = self._locked(provider)
    from_locked: uint256 = min(amount, locked)
    from_unbonding: uint256 = min(amount - from_locked, self.unbonding[provider])
    if from_locked > 0:
        self._set_locked(provider, locked, locked - from_locked)
    if from_unbonding > 0:
        self.unbonding[provider] -= from_unbonding
    taken: uint256 = from_locked + from_unbonding
    if taken > 0:
        extcall token.burn(taken)
    log Slashed(provider=provider, amount=taken, evidence=evidence)
    return taken


# ---- stakers' pool -----------------------------------------------------------

@external
def fund_pool(amount: uint256):
    """@notice Adds `amount` of the caller's credit to the stakers' pool (approve first)."""
    assert extcall token.transferFrom(msg.sender, self, amount)
    total: uint256 = self._locked(TOTAL)
    if total == 0:
        # Nobody to pay yet: held for the first funding that finds stake.
        self.pool_unassigned += amount
    else:
        scaled: uint256 = (amount + self.pool_unassigned) * ACC_SCALE + self.reward_carry
        self.pool_unassigned = 0
        self.acc_reward_per_stake += scaled // total
        self.reward_carry = scaled % total
    log PoolFunded(funder=msg.sender, amount=amount)


@external
@view
def pending(staker: address) -> uint256:
    """@notice Pool rewards the staker can claim now."""
    locked: uint256 = self._locked(staker)
    return (self.reward_owed[staker] + locked * self.acc_reward_per_stake // ACC_SCALE
            - self.reward_debt[staker])


@external
def claim() -> uint256:
    """@notice Pays the caller's pool rewards. @return The amount paid."""
    locked: uint256 = self._locked(msg.sender)
    self._settle(msg.sender, locked)
    self.reward_debt[msg.sender] = locked * self.acc_reward_per_stake // ACC_SCALE
    amount: uint256 = self.reward_owed[msg.sender]
    self.reward_owed[msg.sender] = 0
    if amount > 0:
        assert extcall token.transfer(msg.sender, amount)
    log Claimed(staker=msg.sender, amount=amount)
    return amount
