"""An independent OTLP logs collector for tests/otlp_interop.rs: PyPI's `grpcio` server
with the official generated service (`opentelemetry-proto`'s
`add_LogsServiceServicer_to_server`), its statuses built with `grpcio-status` and
`googleapis-common-protos`. Nothing in it comes from logsender.

    python3 tests/support/otlp_server.py ENDING...

ENDING says how each `Export` ends:

- `ok`: OK with an empty ExportLogsServiceResponse;
- `partial N MSG`: every request that carries records is answered OK with
  `partial_success { rejected_log_records: N, error_message: MSG }` (empty requests,
  probes, get a plain OK);
- `retry-after CODE SECONDS`: the first request that carries records fails with CODE
  (a `grpc.StatusCode` name) and a `google.rpc.Status` whose details hold a packed
  `google.rpc.RetryInfo { retry_delay: SECONDS }` (`rpc_status.to_status`,
  `context.abort_with_status`), message `throttled`; then ok;
- `fail CODE`: every request fails with CODE (message `told to fail`), probes too;
- `first-fail CODE`: the first request that carries records fails with CODE, then ok.

It binds 127.0.0.1:0 and prints `PORT n`, then one JSON line per request, decoded
with the official classes in the form tests/support/otlp_interop.py uses:

    {"n": 0, "at_ns": <time.monotonic_ns() on arrival>, "size": <ByteSize>,
     "answer": "OK" | <code name>, "errors": [<check() of each ResourceLogs>],
     "resource_logs": [{"records": n, "resource": {key: ["s", text] ...},
                        "entries": [{"time": .., "observed": .., "severity_number": ..,
                                     "severity_text": .., "body": .., "attributes": {..}}]}]}

It runs until its stdin closes (or it is killed).
"""

import json
import os
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from otlp_interop import attributes, check, record  # noqa: E402


def code_of(name):
    try:
        return grpc.StatusCode[name]
    except KeyError:
        sys.exit(f"unknown status code {name!r}")


def parse_ending(argv):
    usage = "ENDING: ok | partial N MSG | retry-after CODE SECONDS | fail CODE | first-fail CODE"
    if not argv:
        sys.exit(usage)
    kind, args = argv[0], argv[1:]
    if kind == "ok" and not args:
        return {"kind": kind}
    if kind == "partial" and len(args) == 2:
        return {"kind": kind, "rejected": int(args[0]), "message": args[1]}
    if kind == "retry-after" and len(args) == 2:
        return {"kind": kind, "code": code_of(args[0]), "seconds": float(args[1])}
    if kind in ("fail", "first-fail") and len(args) == 1:
        return {"kind": kind, "code": code_of(args[0])}
    sys.exit(usage)


def resource_logs(rl, where, errors):
    """One ResourceLogs in otlp_interop.py's JSON form, checked by its check()."""
    single = logs_service_pb2.ExportLogsServiceRequest()
    single.resource_logs.append(rl)
    entries = []
    for sl in rl.scope_logs:
        for i, r in enumerate(sl.log_records):
            entries.append(record(r, f"{where} record {i}", errors))
    errors += check(where, single.SerializeToString(), {"records": len(entries)})
    return {
        "records": len(entries),
        "resource": attributes(rl.resource.attributes, f"{where} resource", errors),
        "entries": entries,
    }


class Collector(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, ending):
        self.ending = ending
        self.lock = threading.Lock()
        self.requests = 0
        # Whether the one-time failure (retry-after, first-fail) has been answered.
        self.failed_once = False

    def Export(self, request, context):
        at = time.monotonic_ns()
        errors = []
        with self.lock:
            n = self.requests
            self.requests += 1
            rls = [resource_logs(rl, f"request {n} resource_logs {i}", errors)
                   for i, rl in enumerate(request.resource_logs)]
            carries = any(rl["records"] > 0 for rl in rls)
            kind = self.ending["kind"]
            fail = kind == "fail" or (
                kind in ("retry-after", "first-fail") and carries and not self.failed_once)
            if fail and kind != "fail":
                self.failed_once = True
            answer = self.ending["code"].name if fail else "OK"
            line = {"n": n, "at_ns": at, "size": request.ByteSize(), "answer": answer,
                    "errors": errors, "resource_logs": rls}
            print(json.dumps(line, ensure_ascii=False, sort_keys=True), flush=True)
        if fail and kind == "retry-after":
            seconds = self.ending["seconds"]
            delay = duration_pb2.Duration(seconds=int(seconds),
                                          nanos=round((seconds - int(seconds)) * 1e9))
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            status = status_pb2.Status(code=self.ending["code"].value[0], message="throttled",
                                       details=[detail])
            context.abort_with_status(rpc_status.to_status(status))
        if fail:
            context.abort(self.ending["code"], "told to fail")
        response = logs_service_pb2.ExportLogsServiceResponse()
        if kind == "partial" and carries:
            response.partial_success.rejected_log_records = self.ending["rejected"]
            response.partial_success.error_message = self.ending["message"]
        return response


def main():
    ending = parse_ending(sys.argv[1:])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Collector(ending), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    # Until the test closes our stdin (or goes away).
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
