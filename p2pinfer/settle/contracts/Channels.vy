# pragma version ~=0.4.3
"""
@title p2pinfer payment channels
@notice A consumer deposits credit for one provider; the provider redeems the
        consumer's cumulative EIP-191 vouchers. Each redeemed amount is split
        (provider, pool, burn, treasury) by basis points fixed at deployment; the
        pool share is handed to the stakers once per epoch. A consumer gets back
        what was not redeemed after a reclaim timeout, during which the provider
        may still redeem. No account has any power over the contract.
"""

interface Credit:
    def transfer(receiver: address, amount: uint256) -> bool: nonpayable
    def transferFrom(sender: address, receiver: address, amount: uint256) -> bool: nonpayable
    def approve(spender: address, amount: uint256) -> bool: nonpayable
    def burn(amount: uint256): nonpayable

interface Stake:
    def fund_pool(amount: uint256): nonpayable

struct Channel:
    deposit: uint256
    redeemed: uint256
    reclaim_at: uint256

struct Shares:
    provider: uint256
    pool: uint256
    burned: uint256
    treasury: uint256

event Deposited:
    consumer: indexed(address)
    provider: indexed(address)
    amount: uint256

event Redeemed:
    consumer: indexed(address)
    provider: indexed(address)
    amount: uint256
    provider_share: uint256
    pool_share: uint256
    burned: uint256
    treasury_share: uint256

event ReclaimStarted:
    consumer: indexed(address)
    provider: indexed(address)
    reclaim_at: uint256

event Reclaimed:
    consumer: indexed(address)
    provider: indexed(address)
    amount: uint256

event PoolDistributed:
    amount: uint256

BPS: constant(uint256) = 10_000
MAX_BATCH: constant(uint256) = 64
SIGNED_PREFIX: constant(Bytes[28]) = b"\x19Ethereum Signed Message:\n32"

token: public(immutable(Credit))
stake: public(immutable(Stake))
treasury: public(immutable(address))
split_bps: public(immutable(uint256[4]))
reclaim_timeout_s: public(immutable(uint256))
epoch_s: public(immutable(uint256))

channels: HashMap[address, HashMap[address, Channel]]
# Pool shares collected since the last distribution, and when that was.
pool_balance: public(uint256)
last_distribution: public(uint256)


@deploy
def __init__(token_: address, stake_: address, treasury_: address, split_bps_: uint256[4],
             reclaim_timeout_s_: uint256, epoch_s_: uint256):
    assert token_ != empty(address) and stake_ != empty(address), "zero address"
    assert treasury_ != empty(address), "treasury is the zero address"
    assert split_bps_[0] + split_bps_[1] + split_bps_[2] + split_bps_[3] == BPS, (
        "split does not sum to 10000")
    token = Credit(token_)
    stake = Stake(stake_)
    treasury = treasury_
    split_bps = split_bps_
    reclaim_timeout_s = reclaim_timeout_s_
    epoch_s = epoch_s_
    self.last_distribution = block.timestamp


@external
def deposit(provider: address, amount: uint256):
    """@notice Adds `amount` of the caller's credit to its channel to `provider`; cancels a reclaim."""
    assert provider != empty(address), "provider is the zero address"
    assert amount > 0, "nothing to deposit"
    self.channels[msg.sender][provider].deposit += amount
    self.channels[msg.sender][provider].reclaim_at = 0
    assert extcall token.transferFrom(msg.sender, self, amount)
    log Deposited(consumer=msg.sender, provider=provider, amount=amount)


@external
@view
def channel(consumer: address, provider: address) -> (uint256, uint256, uint256):
    """@notice (deposit, redeemed, reclaim_at) of the channel; reclaim_at 0 when none is pending."""
    ch: Channel = self.channels[consumer][provider]
    return ch.deposit, ch.redeemed, ch.reclaim_at


@external
@view
def voucher_digest(consumer: address, provider: address, cumulative: uint256) -> bytes32:
    """@notice The digest a consumer signs (EIP-191) to owe `provider` `cumulative` in all."""
    return keccak256(abi_encode(self, chain.id, consumer, provider, cumulative))


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


@internal
def _redeem(consumer: address, provider: address, cumulative: uint256,
            sig: Bytes[65]) -> Shares:
    """Checks one voucher, records it, and returns its split; moves no tokens."""
    digest: bytes32 = keccak256(abi_encode(self, chain.id, consumer, provider, cumulative))
    signer: address = self._recover(digest, sig)
    assert signer == consumer and signer != empty(address), "bad voucher"
    # Field by field: reclaim_at is not needed here, and each slot read costs.
    redeemed: uint256 = self.channels[consumer][provider].redeemed
    assert cumulative > redeemed, "nothing to redeem"
    assert cumulative <= self.channels[consumer][provider].deposit, "over deposit"
    self.channels[consumer][provider].redeemed = cumulative
    amount: uint256 = cumulative - redeemed
    parts: Shares = Shares(
        provider=amount * split_bps[0] // BPS,
        pool=amount * split_bps[1] // BPS,
        burned=0,
        treasury=amount * split_bps[3] // BPS,
    )
    # Burn takes its own share and every unit the floors left over.
    parts.burned = amount - parts.provider - parts.pool - parts.treasury
    log Redeemed(consumer=consumer, provider=provider, amount=amount,
                 provider_share=parts.provider, pool_share=parts.pool,
                 burned=parts.burned, treasury_share=parts.treasury)
    return parts


@internal
def _pay(provider: address, parts: Shares):
    self.pool_balance += parts.pool
    if parts.provider > 0:
        assert extcall token.transfer(provider, parts.provider)
    if parts.treasury > 0:
        assert extcall token.transfer(treasury, parts.treasury)
    if parts.burned > 0:
        extcall token.burn(parts.burned)


@external
def redeem(consumer: address, cumulative: uint256, sig: Bytes[65]):
    """@notice The caller (provider) redeems `consumer`'s voucher for `cumulative`."""
    self._pay(msg.sender, self._redeem(consumer, msg.sender, cumulative, sig))


@external
def redeem_many(consumers: DynArray[address, MAX_BATCH],
                cumulatives: DynArray[uint256, MAX_BATCH],
                sigs: DynArray[Bytes[65], MAX_BATCH]):
    """
    @notice `redeem` for many consumers of the caller at once, paying the summed
            split in one transfer each; any voucher `redeem` would refuse reverts all.
    """
    n: uint256 = len(consumers)
    assert len(cumulatives) == n and len(sigs) == n, "length mismatch"
    total: Shares = empty(Shares)
    for i: uint256 in range(n, bound=MAX_BATCH):
        parts: Shares = self._redeem(consumers[i], msg.sender, cumulatives[i], sigs[i])
        total.provider += parts.provider
        total.pool += parts.pool
        total.burned += parts.burned
        total.treasury += parts.treasury
    self._pay(msg.sender, total)


@external
def start_reclaim(provider: address):
    """@notice The caller (consumer) asks back its unredeemed deposit after the reclaim timeout."""
    ch: Channel = self.channels[msg.sender][provider]
    assert ch.deposit > ch.redeemed, "nothing to reclaim"
    reclaim_at: uint256 = block.timestamp + reclaim_timeout_s
    self.channels[msg.sender][provider].reclaim_at = reclaim_at
    log ReclaimStarted(consumer=msg.sender, provider=provider, reclaim_at=reclaim_at)


@external
def reclaim(provider: address) -> uint256:
    """
    @notice Refunds the caller's unredeemed deposit once its reclaim is due. The
            channel keeps `redeemed`, so old vouchers stay spent if it is refilled.
    @return The amount refunded.
    """
    ch: Channel = self.channels[msg.sender][provider]
    assert ch.reclaim_at != 0 and block.timestamp >= ch.reclaim_at, "reclaim not due"
    refund: uint256 = ch.deposit - ch.redeemed
    self.channels[msg.sender][provider] = Channel(
        deposit=ch.redeemed, redeemed=ch.redeemed, reclaim_at=0)
    if refund > 0:
        assert extcall token.transfer(msg.sender, refund)
    log Reclaimed(consumer=msg.sender, provider=provider, amount=refund)
    return refund


@external
def distribute_pool() -> uint256:
    """
    @notice Anyone, once per epoch: hands the pool collected since to the stakers
            (Stake.fund_pool). @return The amount handed over.
    """
    assert block.timestamp >= self.last_distribution + epoch_s, "epoch not over"
    self.last_distribution = block.timestamp
    amount: uint256 = self.pool_balance
    self.pool_balance = 0
    if amount > 0:
        assert extcall token.approve(stake.address, amount)
        extcall stake.fund_pool(amount)
    log PoolDistributed(amount=amount)
    return amount
