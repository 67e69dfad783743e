"""Tessera's failures, decoded by a stock gRPC client library.

A third-party client is written from Tessera's .proto files and its language's gRPC
library; this check is such a client, in Python, with `grpcio` and `grpcio-status`
(gRPC's helper for the rich error model). Against a running cluster it provokes each
kind of refusal a client must act on and checks that `rpc_status.from_call` decodes the
google.rpc.Status, that the typed failure unpacks from its details with its kind,
effect and data, that an ErrorInfo names the kind, and that the status code is the one
service.proto documents. It exits 1 with what differed on the first mismatch.

    python3 check_failures.py PD_ADDRESS   (generated *_pb2 modules on sys.path)
"""

import sys
import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import command_pb2
import service_pb2
import service_pb2_grpc

DEADLINE_SECONDS = 10


def fail(what):
    print(f"FAIL: {what}")
    sys.exit(1)


def refusal(call, *args):
    """The RpcError a call must end with."""
    try:
        call(*args, timeout=DEADLINE_SECONDS)
    except grpc.RpcError as error:
        return error
    fail(f"{call} succeeded; a refusal was expected")


def decoded(error, failure_type):
    """The typed failure and the ErrorInfo in a refusal, through grpcio-status."""
    status = rpc_status.from_call(error)
    if status is None:
        fail(f"no google.rpc.Status in the trailer of {error.code()}: {error.details()}")
    failure, info = None, None
    for detail in status.details:
        if detail.Is(failure_type.DESCRIPTOR):
            failure = failure_type()
            detail.Unpack(failure)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
    if failure is None or info is None:
        fail(f"details lack a {failure_type.DESCRIPTOR.name} or an ErrorInfo: {status}")
    if info.domain != "tessera":
        fail(f"ErrorInfo domain {info.domain!r}")
    return failure, info


def expect(error, code, kind, reason, failure_type=service_pb2.KvFailure):
    if error.code() != code:
        fail(f"{kind}: code {error.code()}, expected {code} ({error.details()})")
    failure, info = decoded(error, failure_type)
    if failure.WhichOneof("kind") != kind:
        fail(f"expected kind {kind}, decoded {failure}")
    if info.reason != reason:
        fail(f"{kind}: ErrorInfo reason {info.reason!r}, expected {reason!r}")
    if "Some(" in error.details() or "Peer {" in error.details():
        fail(f"{kind}: a message in Rust debug formatting: {error.details()!r}")
    print(f"PASS: {kind}: {code.name}, {error.details()!r}")
    return failure


def not_applied(failure, kind):
    if failure.effect != service_pb2.REQUEST_EFFECT_NOT_APPLIED:
        fail(f"{kind}: effect {failure.effect}, expected REQUEST_EFFECT_NOT_APPLIED")


def first_region(pd):
    """The first region's route once it has a leader and all its replicas."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        route = pd.RegionByKey(service_pb2.RegionByKeyRequest(key=b""), timeout=DEADLINE_SECONDS)
        if route.HasField("leader") and len(route.region.peers) >= 2:
            return route
        time.sleep(0.2)
    fail("the first region has no leader with a follower after 60 s")


def main():
    pd_channel = grpc.insecure_channel(sys.argv[1])
    pd = service_pb2_grpc.PdStub(pd_channel)
    stores = {s.store.id: s.store.address for s in pd.Stores(service_pb2.StoresRequest()).stores}
    route = first_region(pd)
    region, leader = route.region, route.leader
    follower = next(p for p in region.peers if p.store_id != leader.store_id)
    context = service_pb2.RegionContext(region_id=region.id, epoch=region.epoch)
    put = command_pb2.Write(put=command_pb2.Put(key=b"python-client", value=b"v"))

    leader_kv = service_pb2_grpc.KvStub(grpc.insecure_channel(stores[leader.store_id]))
    follower_kv = service_pb2_grpc.KvStub(grpc.insecure_channel(stores[follower.store_id]))

    write = service_pb2.WriteRequest(context=context, writes=[put])
    failure = expect(refusal(follower_kv.Write, write), grpc.StatusCode.FAILED_PRECONDITION,
                     "not_leader", "NOT_LEADER")
    not_applied(failure, "not_leader")
    if failure.not_leader.leader_address != stores[leader.store_id]:
        fail(f"not_leader names {failure.not_leader.leader_address!r}, the leader is at "
             f"{stores[leader.store_id]!r}")

    if region.epoch.version == 0:
        fail(f"the first region's epoch has no version to be older than: {region.epoch}")
    stale = service_pb2.RegionContext(region_id=region.id, epoch=region.epoch)
    stale.epoch.version -= 1
    failure = expect(refusal(leader_kv.Write, service_pb2.WriteRequest(context=stale, writes=[put])),
                     grpc.StatusCode.FAILED_PRECONDITION, "epoch_not_match", "EPOCH_NOT_MATCH")
    not_applied(failure, "epoch_not_match")
    if failure.epoch_not_match.id != region.id or failure.epoch_not_match.epoch != region.epoch:
        fail(f"epoch_not_match carries {failure.epoch_not_match}, expected region {region.id} at "
             f"{region.epoch}")

    ahead = service_pb2.RegionContext(region_id=region.id, epoch=region.epoch)
    ahead.epoch.version += 1000
    failure = expect(refusal(leader_kv.Write, service_pb2.WriteRequest(context=ahead, writes=[put])),
                     grpc.StatusCode.UNAVAILABLE, "replica_behind", "REPLICA_BEHIND")
    not_applied(failure, "replica_behind")

    missing = service_pb2.RegionContext(region_id=999999, epoch=region.epoch)
    failure = expect(refusal(leader_kv.Get, service_pb2.GetRequest(context=missing, key=b"k")),
                     grpc.StatusCode.NOT_FOUND, "region_not_found", "REGION_NOT_FOUND")
    not_applied(failure, "region_not_found")
    if failure.region_not_found != 999999:
        fail(f"region_not_found carries {failure.region_not_found}")

    failure = expect(refusal(leader_kv.Get, service_pb2.GetRequest(key=b"k")),
                     grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument", "INVALID_ARGUMENT")
    not_applied(failure, "invalid_argument")

    empty_key = command_pb2.Write(put=command_pb2.Put(key=b"", value=b"v"))
    expect(refusal(leader_kv.Write, service_pb2.WriteRequest(context=context, writes=[empty_key])),
           grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument", "INVALID_ARGUMENT")

    expect(refusal(pd.RegionById, service_pb2.RegionByIdRequest(region_id=999999)),
           grpc.StatusCode.NOT_FOUND, "unknown_region", "UNKNOWN_REGION", service_pb2.PdFailure)

    leader_kv.Write(write, timeout=DEADLINE_SECONDS)
    answer = leader_kv.Get(service_pb2.GetRequest(context=context, key=b"python-client"),
                           timeout=DEADLINE_SECONDS)
    if not answer.found or answer.value != b"v":
        fail(f"the write through the leader reads back as {answer}")
    print("PASS: a write through the leader reads back")


if __name__ == "__main__":
    main()
