"""privacy/secagg/silo.py: the silo's consistency checks, and shares that fail AES-GCM or their digest."""

from __future__ import annotations

import dataclasses

import pytest

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg import silo
from fedsilo.privacy.secagg.messages import KeyDirectory, UnmaskRequest


def test_a_tampered_ciphertext_fails_its_tag_and_names_the_dealer(stepper) -> None:
    r = stepper(5, 3)
    relayed = r.share()
    sealed = bytearray(relayed[1].ciphertexts[3])
    sealed[-5] ^= 0x01
    tampered = dataclasses.replace(relayed[1], ciphertexts={**relayed[1].ciphertexts, 3: bytes(sealed)})
    state, masked = silo.masked_input(r.states[1], tampered, r.updates[1])
    assert masked.suspects == (3,)
    assert 3 not in state.held and set(state.held) == {1, 2, 4, 5}  # the bad share is not kept


def test_a_ciphertext_moved_to_another_silo_does_not_open(stepper) -> None:
    r = stepper(4, 3)
    relayed = r.share()
    swapped = dict(relayed[1].ciphertexts)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    _, masked = silo.masked_input(r.states[1], dataclasses.replace(relayed[1], ciphertexts=swapped), r.updates[1])
    assert masked.suspects == (2, 3)


def test_a_share_that_does_not_match_its_dealers_digest_names_the_dealer(stepper) -> None:
    r = stepper(4, 3)
    relayed = r.share()
    b_digest, s_digest = relayed[2].digests[4]
    wrong = dataclasses.replace(relayed[2], digests={**relayed[2].digests, 4: (s_digest, b_digest)})
    _, masked = silo.masked_input(r.states[2], wrong, r.updates[2])
    assert masked.suspects == (4,)
    missing = dataclasses.replace(relayed[2], ciphertexts={k: v for k, v in relayed[2].ciphertexts.items() if k != 1})
    _, masked = silo.masked_input(r.states[2], missing, r.updates[2])
    assert masked.suspects == (1,)  # a neighbour in U2 whose share never came is a suspect too


def test_a_silo_never_reveals_both_kinds_of_share_for_one_peer(stepper) -> None:
    r = stepper(5, 3)
    relayed = r.share()
    state, _ = silo.masked_input(r.states[1], relayed[1], r.updates[1])
    with pytest.raises(SecAggError, match=r"silos \[3\] are named both survivor and dropped"):
        silo.unmask(state, UnmaskRequest(survivors=(1, 2, 3, 4), dropped=(3, 5)))
    state, reply = silo.unmask(state, UnmaskRequest(survivors=(1, 2, 3, 4), dropped=(5,)))
    assert set(reply.b_shares) == {1, 2, 3, 4} and set(reply.s_shares) == {5}
    with pytest.raises(SecAggError, match="phase 'revealed'"):  # one unmask request per round, no second view
        silo.unmask(state, UnmaskRequest(survivors=(1, 2, 3), dropped=(4, 5)))


def test_unmask_requests_that_break_the_rules_are_refused_with_every_reason(stepper) -> None:
    r = stepper(5, 4)
    relayed = r.share()
    state, _ = silo.masked_input(r.states[2], relayed[2], r.updates[2])
    with pytest.raises(SecAggError) as info:
        silo.unmask(state, UnmaskRequest(survivors=(1, 3, 4), dropped=(5,)))
    msg = info.value.message
    assert "not among the survivors" in msg and "do not add up" in msg and "fewer than t=4" in msg


def test_a_directory_without_the_silos_own_keys_or_with_repeated_keys_is_refused(stepper) -> None:
    r = stepper(4, 3)
    other = dict(r.keys.keys)
    other[1] = other[2]
    with pytest.raises(SecAggError) as info:
        silo.share_keys(r.states[1], KeyDirectory(other))
    assert "own keys" in info.value.message and "equal" in info.value.message
    too_few = KeyDirectory({u: k for u, k in r.keys.keys.items() if u in (1, 2)})
    with pytest.raises(SecAggError, match="fewer than t=3"):
        silo.share_keys(r.states[1], too_few)


def test_steps_out_of_order_are_refused(stepper) -> None:
    r = stepper(3, 2)
    with pytest.raises(SecAggError, match="phase 'advertised'"):
        silo.unmask(r.states[1], UnmaskRequest(survivors=(1, 2, 3), dropped=()))
    with pytest.raises(SecAggError, match="not in this round"):
        silo.advertise(r.config, 9)
