#!/usr/bin/env python3
"""Example sandboxd client: create and get a sandbox, route a guild to it, watch its lifecycle
events on a stream while destroying it, then decode rich gRPC errors.

The gRPC stubs are not committed; generate them into a directory and pass it with --stubs:

    python3 -m grpc_tools.protoc -I proto --python_out=DIR --grpc_python_out=DIR \
        proto/sandboxd/v1/*.proto

When DIR holds no stubs yet, this script generates them itself from the repository's proto/.
Exits non-zero when any expectation fails; prints "python client example: OK" at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
UPPER_SNAKE_CASE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
ERROR_DOMAIN = "sandboxd"
RPC_TIMEOUT_SECONDS = 120.0


class ExpectationFailed(Exception):
    """An observed result differs from what the API contract promises."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ExpectationFailed(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Exercise the sandboxd API from Python: create, get and destroy a sandbox, "
        "then provoke errors and decode their google.rpc.ErrorInfo details.",
    )
    parser.add_argument("--target", required=True, help="server address, HOST:PORT")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SANDBOXD_API_KEY"),
        help="API key, sent as 'authorization: Bearer KEY' (default: $SANDBOXD_API_KEY)",
    )
    parser.add_argument(
        "--stubs",
        default=os.environ.get("SANDBOXD_PYTHON_STUBS"),
        help="directory holding the generated stubs (sandboxd/v1/*_pb2*.py); generated there "
        "when missing (default: $SANDBOXD_PYTHON_STUBS)",
    )
    parser.add_argument(
        "--template", default="discord-guild", help="template to create the sandbox from"
    )
    parser.add_argument(
        "--proto-dir",
        default=str(REPO_ROOT / "proto"),
        help="proto root used when the stubs must be generated (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("--api-key (or $SANDBOXD_API_KEY) is required")
    if not args.stubs:
        parser.error("--stubs (or $SANDBOXD_PYTHON_STUBS) is required")
    return args


def ensure_stubs(stubs_dir: Path, proto_dir: Path) -> None:
    """Generates the stubs into stubs_dir unless they are already there."""
    if (stubs_dir / "sandboxd" / "v1" / "sandbox_pb2_grpc.py").exists():
        return
    protos = sorted(str(p) for p in (proto_dir / "sandboxd" / "v1").glob("*.proto"))
    if not protos:
        raise ExpectationFailed(f"no stubs in {stubs_dir} and no .proto files under {proto_dir}")
    stubs_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
        f"--python_out={stubs_dir}", f"--grpc_python_out={stubs_dir}", *protos,
    ]
    print(f"generating stubs: {' '.join(command)}")
    subprocess.run(command, check=True)


def error_info(err, error_details_pb2, rpc_status):
    """Returns the google.rpc.Status of a failed call and its ErrorInfo detail."""
    status = rpc_status.from_call(err)
    expect(status is not None, f"{err.code().name} carries no google.rpc.Status details")
    info = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
    expect(info is not None, f"{err.code().name} carries no google.rpc.ErrorInfo detail")
    print(f"  {err.code().name}: {status.message}")
    print(f"  ErrorInfo reason={info.reason} domain={info.domain} metadata={dict(info.metadata)}")
    expect(
        info.domain == ERROR_DOMAIN,
        f"ErrorInfo.domain is {info.domain!r}, not {ERROR_DOMAIN!r}",
    )
    expect(
        bool(UPPER_SNAKE_CASE.match(info.reason)),
        f"ErrorInfo.reason {info.reason!r} is not non-empty UPPER_SNAKE_CASE",
    )
    return status, info


def run(args: argparse.Namespace) -> None:
    ensure_stubs(Path(args.stubs), Path(args.proto_dir))
    sys.path.insert(0, str(Path(args.stubs).resolve()))

    import grpc
    from google.protobuf import json_format
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status
    from sandboxd.v1 import routing_pb2, routing_pb2_grpc, sandbox_pb2, sandbox_pb2_grpc

    state_name = sandbox_pb2.SandboxState.Name
    metadata = (("authorization", f"Bearer {args.api_key}"),)

    with grpc.insecure_channel(args.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
        except grpc.FutureTimeoutError:
            raise ExpectationFailed(f"cannot connect to {args.target}") from None
        client = sandbox_pb2_grpc.SandboxControlStub(channel)
        routing = routing_pb2_grpc.GuildRoutingStub(channel)

        def call(method, request):
            return method(request, metadata=metadata, timeout=RPC_TIMEOUT_SECONDS)

        # Create, get and destroy a sandbox.
        name = f"py-example-{uuid.uuid4().hex[:8]}"
        print(f"CreateSandbox template={args.template} name={name}")
        sandbox = call(
            client.CreateSandbox,
            sandbox_pb2.CreateSandboxRequest(
                template=args.template,
                name=name,
                labels={"client": "python-example"},
                request_id=str(uuid.uuid4()),
            ),
        )
        destroyed = False
        try:
            print(json_format.MessageToJson(sandbox))
            expect(sandbox.sandbox_id != "", "created sandbox has no sandbox_id")
            expect(sandbox.name == name, f"created sandbox is named {sandbox.name!r}, not {name!r}")

            print(f"GetSandbox sandbox_id={sandbox.sandbox_id}")
            got = call(
                client.GetSandbox, sandbox_pb2.GetSandboxRequest(sandbox_id=sandbox.sandbox_id)
            )
            expect(got.sandbox_id == sandbox.sandbox_id, "GetSandbox returned another sandbox")
            expect(
                got.state == sandbox_pb2.SANDBOX_STATE_RUNNING,
                f"sandbox is {state_name(got.state)}, expected SANDBOX_STATE_RUNNING",
            )
            print(f"  state={state_name(got.state)}")

            # Route a Discord guild to the sandbox, and resolve it as an event router would.
            guild_id = str(10**17 + uuid.uuid4().int % 10**17)
            print(f"RegisterGuild guild_id={guild_id}")
            call(
                routing.RegisterGuild,
                routing_pb2.RegisterGuildRequest(guild_id=guild_id, sandbox_id=sandbox.sandbox_id),
            )
            route = call(routing.ResolveGuild, routing_pb2.ResolveGuildRequest(guild_id=guild_id))
            expect(
                route.route.sandbox_id == sandbox.sandbox_id,
                f"the guild resolves to {route.route.sandbox_id!r}, not the sandbox",
            )
            print(f"  ResolveGuild → sandbox {route.route.sandbox_id} schema {route.route.schema}")

            # Watch the sandbox's lifecycle events (a server stream) while destroying it.
            watch = client.WatchSandboxes(
                sandbox_pb2.WatchSandboxesRequest(sandbox_id=sandbox.sandbox_id),
                metadata=metadata,
                timeout=RPC_TIMEOUT_SECONDS,
            )
            watch.initial_metadata()  # the stream is open on the server

            print(f"DestroySandbox sandbox_id={sandbox.sandbox_id}")
            gone = call(
                client.DestroySandbox,
                sandbox_pb2.DestroySandboxRequest(
                    sandbox_id=sandbox.sandbox_id, reason="python client example"
                ),
            )
            destroyed = True
            expect(
                gone.state == sandbox_pb2.SANDBOX_STATE_DESTROYED,
                f"destroyed sandbox is {state_name(gone.state)}, expected SANDBOX_STATE_DESTROYED",
            )
            print(f"  state={state_name(gone.state)}")
            seen = []
            for response in watch:
                seen.append(state_name(response.event.sandbox.state))
                if response.event.sandbox.state == sandbox_pb2.SANDBOX_STATE_DESTROYED:
                    break
            watch.cancel()
            expect(
                seen[-1:] == ["SANDBOX_STATE_DESTROYED"],
                f"the watch delivered {seen}, not the destroy",
            )
            print(f"  WatchSandboxes delivered: {' → '.join(seen)}")
            route = call(routing.ResolveGuild, routing_pb2.ResolveGuildRequest(guild_id=guild_id))
            expect(
                route.route.sandbox_id == "",
                "the destroyed sandbox's guild falls back to the default route",
            )
            print("  ResolveGuild → the default (production) route")
        finally:
            if not destroyed:
                try:
                    call(
                        client.DestroySandbox,
                        sandbox_pb2.DestroySandboxRequest(
                            sandbox_id=sandbox.sandbox_id, reason="python client example cleanup"
                        ),
                    )
                except grpc.RpcError as cleanup_error:
                    print(f"cleanup of {sandbox.sandbox_id} failed: {cleanup_error.code().name}")

        # An unknown template is NOT_FOUND with an ErrorInfo detail.
        print("CreateSandbox template=no-such-template (expect NOT_FOUND)")
        try:
            call(
                client.CreateSandbox,
                sandbox_pb2.CreateSandboxRequest(template="no-such-template", name=name),
            )
            raise ExpectationFailed("CreateSandbox with an unknown template succeeded")
        except grpc.RpcError as err:
            expect(
                err.code() == grpc.StatusCode.NOT_FOUND,
                f"got {err.code().name}, expected NOT_FOUND",
            )
            error_info(err, error_details_pb2, rpc_status)

        # An invalid name is INVALID_ARGUMENT with ErrorInfo and BadRequest details.
        print("CreateSandbox name=Not_A_Valid_Name! (expect INVALID_ARGUMENT)")
        try:
            call(
                client.CreateSandbox,
                sandbox_pb2.CreateSandboxRequest(template=args.template, name="Not_A_Valid_Name!"),
            )
            raise ExpectationFailed("CreateSandbox with an invalid name succeeded")
        except grpc.RpcError as err:
            expect(
                err.code() == grpc.StatusCode.INVALID_ARGUMENT,
                f"got {err.code().name}, expected INVALID_ARGUMENT",
            )
            status, _ = error_info(err, error_details_pb2, rpc_status)
            fields = []
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad_request = error_details_pb2.BadRequest()
                    detail.Unpack(bad_request)
                    fields.extend(v.field for v in bad_request.field_violations)
            print(f"  BadRequest field violations: {fields}")
            expect("name" in fields, f"no BadRequest field violation for 'name' (got {fields})")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except ExpectationFailed as failure:
        print(f"python client example: FAILED: {failure}", file=sys.stderr)
        return 1
    except Exception as err:  # an unexpected RPC error or a broken environment
        code = getattr(err, "code", None)
        if callable(code):
            details = err.details() if callable(getattr(err, "details", None)) else ""
            print(
                f"python client example: FAILED: RPC error {code().name}: {details}",
                file=sys.stderr,
            )
        else:
            print(f"python client example: FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print("python client example: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
