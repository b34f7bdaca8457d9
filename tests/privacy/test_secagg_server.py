"""privacy/secagg/server.py: tampered shares and ciphertexts exclude their dealer; bad reveals are dropped."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg import keys, server, shamir, silo
from fedsilo.privacy.secagg.encoding import decode, encode, layout_size
from fedsilo.privacy.secagg.messages import MaskedInput, SharesForSilo


def expected(r, silos) -> dict[str, np.ndarray]:
    total = np.zeros(layout_size(r.config.layout), dtype=r.config.encoding.dtype)
    for u in silos:
        total += encode(r.updates[u], r.config.layout, r.config.encoding)[0]
    return decode(total, r.config.layout, r.config.encoding)


def finish_round(r, relayed: dict[int, SharesForSilo], tamper_reply=None):
    masked = []
    for u, shares in relayed.items():
        r.states[u], msg = silo.masked_input(r.states[u], shares, r.updates[u])
        masked.append(msg)
    r.server, request = server.request_unmask(r.server, masked)
    replies = []
    for u in request.survivors:
        r.states[u], reply = silo.unmask(r.states[u], request)
        replies.append(tamper_reply(reply) if tamper_reply else reply)
    return server.finish(r.server, replies)


def assert_total(result, want) -> None:
    for k in want:
        assert np.array_equal(result.total[k], want[k]), k


def test_a_tampered_ciphertext_excludes_its_dealer_from_the_sum(stepper) -> None:
    r = stepper(6, 4)
    relayed = r.share()
    sealed = bytearray(relayed[2].ciphertexts[5])
    sealed[15] ^= 0x80
    relayed[2] = dataclasses.replace(relayed[2], ciphertexts={**relayed[2].ciphertexts, 5: bytes(sealed)})
    result = finish_round(r, relayed)
    assert result.excluded == (5,) and result.dropped == (5,) and result.survivors == (1, 2, 3, 4, 6)
    assert_total(result, expected(r, [1, 2, 3, 4, 6]))  # 5's input is not summed, its masks are removed


def test_a_dealer_whose_share_breaks_its_own_digest_is_excluded(stepper) -> None:
    r = stepper(5, 3)
    relayed = r.share()
    # Silo 3 deals silo 1 a share other than the one it committed to, validly encrypted.
    ctx = silo.context(r.config)
    key = keys.agree(r.states[3].c_private, r.keys.keys[1][0], ctx, silo.SHARE_PURPOSE)
    bogus = (1).to_bytes(shamir.SHARE_BYTES, "big")
    plaintext = (3).to_bytes(4, "big") + (1).to_bytes(4, "big") + bogus + bogus
    sealed = keys.seal(key, plaintext, ctx + b"|share|3->1")
    relayed[1] = dataclasses.replace(relayed[1], ciphertexts={**relayed[1].ciphertexts, 3: sealed})
    result = finish_round(r, relayed)
    assert result.excluded == (3,) and result.survivors == (1, 2, 4, 5)
    assert_total(result, expected(r, [1, 2, 4, 5]))


def test_a_tampered_revealed_share_is_rejected_by_digest_and_the_sum_stays_exact(stepper) -> None:
    r = stepper(6, 4)
    relayed = r.share()

    def corrupt(reply):
        if reply.silo != 2:
            return reply
        share = bytearray(reply.b_shares[4])
        share[-1] ^= 1
        return dataclasses.replace(reply, b_shares={**reply.b_shares, 4: bytes(share)})

    result = finish_round(r, relayed, corrupt)
    assert result.bad_shares == ((2, 4),)
    assert result.survivors == (1, 2, 3, 4, 5, 6)
    assert_total(result, expected(r, range(1, 7)))


def test_too_few_valid_shares_after_rejecting_bad_ones_fails_the_round(stepper) -> None:
    r = stepper(4, 4)
    relayed = r.share()

    def corrupt(reply):
        share = bytearray(reply.b_shares[1])
        share[0] ^= 1
        return dataclasses.replace(reply, b_shares={**reply.b_shares, 1: bytes(share)}) if reply.silo == 3 else reply

    with pytest.raises(SecAggError, match="3 valid shares of silo 1's self-mask seed, fewer than t=4"):
        finish_round(r, relayed, corrupt)


def test_malformed_duplicate_and_foreign_masked_inputs_are_not_summed(stepper) -> None:
    r = stepper(5, 3)
    relayed = r.share()
    masked = []
    for u, shares in relayed.items():
        r.states[u], msg = silo.masked_input(r.states[u], shares, r.updates[u])
        masked.append(msg)
    masked[3] = dataclasses.replace(masked[3], vector=masked[3].vector.astype(np.int64))  # silo 4: wrong dtype
    masked.append(MaskedInput(2, np.zeros_like(masked[0].vector)))  # a second input claiming to be silo 2
    masked.append(MaskedInput(9, masked[0].vector))  # not a participant
    r.server, request = server.request_unmask(r.server, masked)
    assert request.survivors == (1, 2, 3, 5) and request.dropped == (4,)
    replies = []
    for u in request.survivors:
        r.states[u], reply = silo.unmask(r.states[u], request)
        replies.append(reply)
    result = server.finish(r.server, replies)
    assert_total(result, expected(r, [1, 2, 3, 5]))


def test_server_steps_out_of_order_are_refused(stepper) -> None:
    r = stepper(3, 2)
    with pytest.raises(SecAggError, match="phase 'shares'"):
        server.finish(r.server, [])
