"""Request ids and ledger uids are drawn from pools (one random read per many ids): they must stay
unique, keep their format, and never repeat in a forked worker."""

from __future__ import annotations

import os
import re

from ccm_gateway.billing.meter import next_uid
from ccm_gateway.middleware.request_id import new_request_id


def test_request_ids_are_unique_and_well_formed_across_pool_refills() -> None:
    ids = [new_request_id() for _ in range(2000)]  # several 256-id refills of the pool
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids)


def test_ledger_uids_are_unique_and_keep_their_length() -> None:
    uids = [next_uid() for _ in range(2000)]
    assert len(set(uids)) == len(uids)
    assert all(re.fullmatch(r"[0-9a-f]{24}", u) for u in uids)


def test_a_forked_worker_draws_its_own_ids() -> None:
    """Without the at-fork reset, the child's first ids would be the parent's next ones."""
    new_request_id(), next_uid()  # the pools are filled before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ids, then leave at once
        try:
            os.write(write, f"{new_request_id()} {next_uid()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        child = os.read(read, 200).decode().split()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert len(child) == 2
    assert child[0] != new_request_id()
    assert child[1][:12] != next_uid()[:12]  # a new random prefix, not just the next count
