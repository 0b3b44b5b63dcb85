"""Decodes the OTLP requests logsender encoded with the official generated classes
(PyPI's `opentelemetry-proto`, on PyPI's `protobuf`) and checks them.

Run by tests/otlp_mapping.rs: `python3 tests/support/otlp_interop.py DIR`. DIR holds
`N.bin` (an ExportLogsServiceRequest) and `N.json` beside it:

- `{"records": n}`: the request parses, has one ResourceLogs with one ScopeLogs
  (scope `logsender`) and n records, no attribute key twice, a string body on every
  record, and no field the classes do not know;
- with `"resource"` and `"entries"` too: the resource's attributes and each record's
  time, observed time, severity, body and attributes are exactly those (values as
  `["s", text]`, `["i", number]` or `["b", bool]`).

Exits 1 with every mismatch on stderr; prints one line on success.
"""

import json
import os
import sys

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2


def typed(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "string_value":
        return ["s", any_value.string_value]
    if kind == "int_value":
        return ["i", any_value.int_value]
    if kind == "bool_value":
        return ["b", any_value.bool_value]
    return [kind, str(any_value)]


def attributes(kvs, where, errors):
    out = {}
    for kv in kvs:
        if kv.key in out:
            errors.append(f"{where}: attribute {kv.key!r} twice")
        out[kv.key] = typed(kv.value)
    return out


def record(r, where, errors):
    """A LogRecord in the JSON form `expected["entries"]` uses."""
    if r.body.WhichOneof("value") != "string_value":
        errors.append(f"{where}: body is not a string")
    return {
        "time": r.time_unix_nano,
        "observed": r.observed_time_unix_nano,
        "severity_number": r.severity_number,
        "severity_text": r.severity_text,
        "body": r.body.string_value,
        "attributes": attributes(r.attributes, where, errors),
    }


def check(name, data, expected):
    errors = []
    req = logs_service_pb2.ExportLogsServiceRequest()
    req.ParseFromString(data)
    copy = logs_service_pb2.ExportLogsServiceRequest()
    copy.CopyFrom(req)
    copy.DiscardUnknownFields()
    # Without its unknown fields the message is as large as the bytes: every byte is a
    # field the classes know. (The bytes themselves may differ on re-serializing:
    # rust-protobuf writes fields in declaration order, `observed_time_unix_nano` (11)
    # right after `time_unix_nano` (1); Python in field-number order.)
    if copy.ByteSize() != len(data):
        errors.append(f"{name}: {len(data) - copy.ByteSize()} bytes of fields the classes do not know")
    if len(req.resource_logs) != 1 or len(req.resource_logs[0].scope_logs) != 1:
        return errors + [f"{name}: not one ResourceLogs with one ScopeLogs"]
    rl = req.resource_logs[0]
    sl = rl.scope_logs[0]
    if sl.scope.name != "logsender" or not sl.scope.version:
        errors.append(f"{name}: scope {sl.scope.name!r} {sl.scope.version!r}")
    resource = attributes(rl.resource.attributes, f"{name} resource", errors)
    records = sl.log_records
    if len(records) != expected["records"]:
        errors.append(f"{name}: {len(records)} records, expected {expected['records']}")
    seen = [record(r, f"{name} record {i}", errors) for i, r in enumerate(records)]
    if "resource" in expected and resource != expected["resource"]:
        for k in sorted(set(resource) | set(expected["resource"])):
            got, want = resource.get(k), expected["resource"].get(k)
            if got != want:
                errors.append(f"{name} resource[{k!r}]: {got!r}, expected {want!r}")
    for i, want in enumerate(expected.get("entries", [])):
        got = seen[i] if i < len(seen) else {}
        for k in sorted(set(got) | set(want)):
            if got.get(k) != want.get(k):
                errors.append(f"{name} record {i} {k}: {got.get(k)!r}, expected {want.get(k)!r}")
    return errors


def main():
    directory = sys.argv[1]
    names = sorted(f[:-4] for f in os.listdir(directory) if f.endswith(".bin"))
    errors = []
    for name in names:
        with open(os.path.join(directory, name + ".bin"), "rb") as f:
            data = f.read()
        with open(os.path.join(directory, name + ".json"), encoding="utf-8") as f:
            expected = json.load(f)
        errors += check(name, data, expected)
    if errors:
        for e in errors[:50]:
            print(e, file=sys.stderr)
        sys.exit(1)
    import google.protobuf
    print(f"otlp interop: {len(names)} requests decoded and checked by opentelemetry-proto's "
          f"classes (protobuf {google.protobuf.__version__})")


if __name__ == "__main__":
    main()
