r"""Weir from Python: the gRPC API with stubs generated from proto/weir/v1/broker.proto.

Shows: connecting over TLS with a password (when $WEIR_TLS_CA, $WEIR_USER and $WEIR_PASSWORD are
set), creating a topic (tolerating TOPIC_ALREADY_EXISTS), producing keyed records with headers
and printing their offsets, fetching them back from offset 0, a consumer-group round trip
(JoinGroup, GroupHeartbeat until an assignment arrives, CommitOffsets, FetchCommittedOffsets,
LeaveGroup), and reading the stable `reason` of an error from the google.rpc.ErrorInfo in the
status details.

Run it from this directory against a running broker (see README.md):

    python -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt
    mkdir -p gen && python -m grpc_tools.protoc -I ../../proto --python_out=gen \
        --pyi_out=gen --grpc_python_out=gen ../../proto/weir/v1/broker.proto
    python weir_example.py [HOST:PORT]

The broker address is the argument, else $WEIR_BROKER, else 127.0.0.1:7070. With $WEIR_TLS_CA
(a CA certificate file) the channel speaks TLS, trusting that CA; with $WEIR_USER and
$WEIR_PASSWORD every call carries `authorization: Basic base64(user:password)`, as
docs/security.md describes.
"""

import base64
import os
import sys
import time
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# The stubs import each other as `weir.v1.*`, so their root goes on the path, not `gen` itself.
sys.path.insert(0, str(Path(__file__).resolve().parent / "gen"))
try:
    from weir.v1 import broker_pb2 as pb
    from weir.v1 import broker_pb2_grpc
except ImportError:
    sys.exit("no generated stubs in ./gen: run the grpc_tools.protoc command in README.md first")

# Every Weir error carries an ErrorInfo in this domain; its reasons are unique only within it.
ERROR_DOMAIN = "weir.dev"
TOPIC = "py-example"
GROUP = "py-example-group"
# Deadline of every call: a gRPC call without one waits forever on a broker that is stuck.
TIMEOUT_S = 10.0


class BasicAuth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds a user's credentials to every call. Weir checks them on every request; send them
    only over TLS, or the password travels in clear."""

    def __init__(self, user: str, password: str) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._metadata = ("authorization", f"Basic {token}")

    def _with_credentials(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _Details(
            method=details.method,
            timeout=details.timeout,
            metadata=list(details.metadata or []) + [self._metadata],
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
            compression=details.compression,
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_credentials(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_credentials(details), request)


class _Details(grpc.ClientCallDetails):
    """Call details with the metadata replaced (grpc's own are read-only)."""

    def __init__(self, *, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def open_channel(address: str) -> grpc.Channel:
    """A channel to `address`: TLS when $WEIR_TLS_CA names a CA file, with the credentials of
    $WEIR_USER and $WEIR_PASSWORD on every call when both are set."""
    ca_file = os.environ.get("WEIR_TLS_CA")
    if ca_file:
        with open(ca_file, "rb") as ca:
            channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca.read()))
    else:
        channel = grpc.insecure_channel(address)
    user, password = os.environ.get("WEIR_USER"), os.environ.get("WEIR_PASSWORD")
    if user and password:
        return grpc.intercept_channel(channel, BasicAuth(user, password))
    return channel


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Weir's ErrorInfo from a failed call's status details; None for statuses from elsewhere
    (the transport, a proxy), which carry no such detail."""
    # Parses the `grpc-status-details-bin` trailer: a google.rpc.Status whose details are Anys.
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return info
    return None


def reason_of(error: grpc.RpcError) -> str | None:
    """The stable reason of a Weir error (e.g. UNKNOWN_TOPIC): branch on this, not the message."""
    info = error_info(error)
    return info.reason if info else None


def create_topic(broker: broker_pb2_grpc.BrokerStub, partitions: int) -> None:
    try:
        broker.CreateTopic(
            pb.CreateTopicRequest(name=TOPIC, partitions=partitions), timeout=TIMEOUT_S
        )
        print(f"created topic {TOPIC} with {partitions} partitions")
    except grpc.RpcError as error:
        if reason_of(error) != "TOPIC_ALREADY_EXISTS":
            raise
        print(f"topic {TOPIC} already exists")


def produce(broker: broker_pb2_grpc.BrokerStub) -> None:
    orders = [(b"alice", b"2 apples"), (b"bob", b"1 pear"), (b"alice", b"3 plums")]
    for key, value in orders:
        record = pb.Record(
            key=key,
            value=value,
            headers=[pb.Header(key="source", value=b"weir_example.py")],
        )
        # No partition given: the key chooses it (Kafka's murmur2 partitioner), so both of
        # alice's records land in the same partition, in order.
        response = broker.Produce(
            pb.ProduceRequest(topic=TOPIC, records=[record], acks=pb.ACKS_ALL),
            timeout=TIMEOUT_S,
        )
        print(
            f"produced key={key.decode()} value={value.decode()!r}"
            f" -> partition {response.partition} offset {response.base_offset}"
        )


def fetch_all(broker: broker_pb2_grpc.BrokerStub, partitions: int) -> dict[int, int]:
    """Prints every record of the topic; returns each partition's next offset to read."""
    next_offsets = {}
    for partition in range(partitions):
        response = broker.Fetch(
            pb.FetchRequest(topic=TOPIC, partition=partition, offset=0, max_wait_ms=0),
            timeout=TIMEOUT_S,
        )
        for record in response.records:
            # `key` is `optional bytes`: an absent key and an empty one are different things.
            key = record.key.decode() if record.HasField("key") else None
            headers = {h.key: h.value.decode() for h in record.headers}
            print(
                f"  partition {partition} offset {record.offset}: key={key}"
                f" value={record.value.decode()!r} headers={headers}"
            )
        next_offsets[partition] = response.next_offset
    return next_offsets


def group_round_trip(broker: broker_pb2_grpc.BrokerStub, next_offsets: dict[int, int]) -> None:
    joined = broker.JoinGroup(
        pb.JoinGroupRequest(group=GROUP, topics=[TOPIC], client_id="weir_example.py"),
        timeout=TIMEOUT_S,
    )
    member = joined.member_id
    print(f"joined {GROUP} as {member} (heartbeat every {joined.heartbeat_interval_ms} ms)")

    # The coordinator assigns partitions; a member learns them from its heartbeats, reporting
    # what it owns so far (nothing yet). An answer may be empty while partitions move.
    deadline = time.monotonic() + 30
    assigned: list[pb.TopicPartitions] = []
    while not assigned:
        beat = broker.GroupHeartbeat(
            pb.GroupHeartbeatRequest(group=GROUP, member_id=member, owned=[]),
            timeout=TIMEOUT_S,
        )
        assigned = list(beat.assignment)
        if not assigned:
            if time.monotonic() > deadline:
                sys.exit("no assignment within 30 s")
            time.sleep(beat.heartbeat_interval_ms / 1000)
    partitions = sorted(p for tp in assigned if tp.topic == TOPIC for p in tp.partitions)
    print(f"generation {beat.generation}: assigned {TOPIC} partitions {partitions}")

    # A committed offset is the next record to consume: here, everything fetched above. A
    # member may commit only the partitions it owns (NOT_ASSIGNED otherwise).
    broker.CommitOffsets(
        pb.CommitOffsetsRequest(
            group=GROUP,
            member_id=member,
            offsets=[
                pb.OffsetCommit(topic=TOPIC, partition=p, offset=next_offsets[p], metadata="demo")
                for p in partitions
            ],
        ),
        timeout=TIMEOUT_S,
    )
    committed = broker.FetchCommittedOffsets(
        pb.FetchCommittedOffsetsRequest(group=GROUP), timeout=TIMEOUT_S
    )
    for c in sorted(committed.offsets, key=lambda c: (c.topic, c.partition)):
        print(f"  committed {c.topic}/{c.partition} offset {c.offset} metadata={c.metadata!r}")

    broker.LeaveGroup(pb.LeaveGroupRequest(group=GROUP, member_id=member), timeout=TIMEOUT_S)
    print(f"left {GROUP}")


def show_error_reason(broker: broker_pb2_grpc.BrokerStub) -> None:
    try:
        broker.Produce(
            pb.ProduceRequest(topic="no-such-topic", records=[pb.Record(value=b"lost")]),
            timeout=TIMEOUT_S,
        )
    except grpc.RpcError as error:
        info = error_info(error)
        print(f"  code:    {error.code().name}")
        print(f"  message: {error.details()}")
        if info is not None:
            print(
                f"  reason:  {info.reason} (domain {info.domain}, metadata {dict(info.metadata)})"
            )
    else:
        sys.exit("producing to a missing topic unexpectedly succeeded")


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WEIR_BROKER", "127.0.0.1:7070")
    # The weir CLI also accepts http://HOST:PORT; grpc wants the bare target.
    address = address.removeprefix("http://")
    partitions = 2
    with open_channel(address) as channel:
        broker = broker_pb2_grpc.BrokerStub(channel)
        try:
            broker.DescribeCluster(pb.DescribeClusterRequest(), timeout=5)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                sys.exit(f"no broker at {address}: start one with `weir broker` (see README.md)")
            sys.exit(f"the broker at {address} refused: {error.code().name}: {error.details()}")
        print(f"connected to {address}")

        print("== create topic")
        create_topic(broker, partitions)
        print("== produce")
        produce(broker)
        print("== fetch from offset 0")
        next_offsets = fetch_all(broker, partitions)
        print("== consumer group")
        group_round_trip(broker, next_offsets)
        print("== an error's reason (produce to a missing topic)")
        show_error_reason(broker)


if __name__ == "__main__":
    main()
