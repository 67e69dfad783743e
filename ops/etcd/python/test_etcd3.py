"""Python's etcd3 client (PyPI) against Tessera's etcd API, unchanged.

Run by ops/etcd/python-etcd3.sh against a playground; TESSERA_ETCD names the stores'
etcd addresses (HOST:PORT, comma-separated). Each test uses keys of its own under a
prefix named after it, so that the tests do not see each other's writes.
"""

import os
import threading
import time

import etcd3
import grpc
import pytest

ENDPOINTS = [endpoint.split(":") for endpoint in os.environ["TESSERA_ETCD"].split(",")]


def connect(index=0):
    host, port = ENDPOINTS[index % len(ENDPOINTS)]
    return etcd3.client(host=host, port=int(port), timeout=20)


@pytest.fixture
def etcd():
    client = connect()
    yield client
    client.close()


def test_put_get_delete_with_prefixes_and_ranges(etcd):
    etcd.delete_prefix("/kv/")  # a run before on the same cluster
    etcd.put("/kv/a", "1")
    etcd.put("/kv/b", "2")
    etcd.put("/kv/c", "3")
    etcd.put("/kw", "outside")
    value, meta = etcd.get("/kv/a")
    assert value == b"1" and meta.version == 1 and meta.create_revision == meta.mod_revision
    etcd.put("/kv/a", "again")
    value, meta = etcd.get("/kv/a")
    assert value == b"again" and meta.version == 2 and meta.mod_revision > meta.create_revision
    assert [meta.key for _, meta in etcd.get_prefix("/kv/")] == [b"/kv/a", b"/kv/b", b"/kv/c"]
    assert [value for value, _ in etcd.get_range("/kv/b", "/kw")] == [b"2", b"3"]
    newest_first = etcd.get_prefix("/kv/", sort_order="descend", sort_target="mod")
    assert [meta.key for _, meta in newest_first][0] == b"/kv/a"
    assert etcd.delete("/kv/b") is True
    assert etcd.delete("/kv/b") is False, "deleting a missing key deletes nothing"
    assert etcd.get("/kv/b") == (None, None)
    assert etcd.delete_prefix("/kv/").deleted == 2
    assert list(etcd.get_prefix("/kv/")) == []
    assert etcd.get("/kw")[0] == b"outside"


def test_transactions_compare_and_swap(etcd):
    etcd.delete_prefix("/txn/")  # a run before on the same cluster
    assert etcd.put_if_not_exists("/txn/k", "first") is True
    assert etcd.put_if_not_exists("/txn/k", "second") is False
    assert etcd.replace("/txn/k", "first", "swapped") is True
    assert etcd.replace("/txn/k", "first", "never") is False
    succeeded, responses = etcd.transaction(
        compare=[etcd.transactions.version("/txn/k") == 2],
        success=[etcd.transactions.put("/txn/other", "x"), etcd.transactions.get("/txn/k")],
        failure=[],
    )
    assert succeeded
    assert responses[1][0][0] == b"swapped", "a read after a write in one transaction"
    _, meta = etcd.get("/txn/other")
    _, swapped = etcd.get("/txn/k")
    assert meta.mod_revision > swapped.mod_revision


def test_a_watch_sees_every_change_in_order_from_a_revision(etcd):
    etcd.delete_prefix("/watch/")  # a run before on the same cluster
    first = etcd.put("/watch/k", "1").header.revision
    etcd.put("/watch/k", "2")
    etcd.delete("/watch/k")
    events, cancel = etcd.watch_prefix("/watch/", start_revision=first)
    seen = []
    for event in events:
        seen.append((type(event).__name__, event.key, event.value))
        if len(seen) == 3:
            break
    cancel()
    assert seen == [
        ("PutEvent", b"/watch/k", b"1"),
        ("PutEvent", b"/watch/k", b"2"),
        ("DeleteEvent", b"/watch/k", b""),
    ]
    # Live: a write through another store reaches a watch on this one.
    other = connect(1)
    events, cancel = etcd.watch("/watch/live")
    other.put("/watch/live", "now")
    event = next(iter(events))
    cancel()
    other.close()
    assert (event.key, event.value) == (b"/watch/live", b"now")


def test_a_lease_keeps_its_keys_while_refreshed_and_takes_them_when_revoked(etcd):
    etcd.delete_prefix("/lease/")  # a run before on the same cluster
    lease = etcd.lease(30)
    etcd.put("/lease/a", "1", lease=lease)
    etcd.put("/lease/b", "2", lease=lease)
    assert sorted(lease.keys) == [b"/lease/a", b"/lease/b"]
    assert 25 <= lease.remaining_ttl <= 30 and lease.granted_ttl == 30
    assert lease.refresh()[0].TTL == 30
    lease.revoke()
    assert list(etcd.get_prefix("/lease/")) == []
    assert lease.remaining_ttl == -1


def test_a_lease_not_refreshed_expires_with_its_keys(etcd):
    lease = etcd.lease(2)
    etcd.put("/expiring/k", "v", lease=lease)
    deadline = time.monotonic() + 10
    while etcd.get("/expiring/k")[0] is not None:
        assert time.monotonic() < deadline, "the key outlived its 2 s lease by 8 s"
        time.sleep(0.2)


def test_locks_exclude_each_other(etcd):
    """Workers on different stores increment one counter under etcd3's lock: with
    mutual exclusion no increment is lost (the read and the write are not one
    transaction, so without the lock they would be)."""
    etcd.put("/lock/counter", "0")
    workers, increments = 3, 5
    errors = []

    def work(index):
        client = connect(index)
        try:
            for _ in range(increments):
                with client.lock("counter", ttl=10):
                    value, _ = client.get("/lock/counter")
                    client.put("/lock/counter", str(int(value) + 1))
        except Exception as error:  # reported below, with the others
            errors.append(repr(error))
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(index,)) for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert etcd.get("/lock/counter")[0] == str(workers * increments).encode()


def test_a_lock_is_free_again_once_its_holder_lets_its_lease_lapse(etcd):
    held = etcd.lock("lapsing", ttl=2)
    assert held.acquire(timeout=5)
    # The holder stops refreshing (a process that died): another can take it within
    # the TTL and the expiry sweep.
    waiter = connect(2).lock("lapsing", ttl=2)
    assert waiter.acquire(timeout=15), "the lock was not freed by its lapsed lease"
    waiter.release()


def test_compaction_refuses_older_revisions(etcd):
    etcd.delete_prefix("/compact/")  # a run before on the same cluster
    old = etcd.put("/compact/k", "1").header.revision
    now = etcd.put("/compact/k", "2").header.revision
    etcd.compact(now)
    # etcd3 reads at a revision only through its generated stub.
    with pytest.raises(grpc.RpcError) as refused:
        etcd.kvstub.Range(etcd3.etcdrpc.RangeRequest(key=b"/compact/k", revision=old), etcd.timeout)
    assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "required revision has been compacted" in refused.value.details()
    at = etcd.kvstub.Range(etcd3.etcdrpc.RangeRequest(key=b"/compact/k", revision=now), etcd.timeout)
    assert at.kvs[0].value == b"2"
    events, cancel = etcd.watch("/compact/k", start_revision=old)
    with pytest.raises(etcd3.exceptions.RevisionCompactedError) as compacted:
        next(iter(events))
    cancel()
    assert compacted.value.compacted_revision == now


def test_members_and_status(etcd):
    urls = sorted(url for member in etcd.members for url in member.client_urls)
    assert urls == sorted("http://%s:%s" % (host, port) for host, port in ENDPOINTS)
    status = etcd.status()
    assert status.version == "3.5.0" and status.db_size > 0
