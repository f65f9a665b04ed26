#!/usr/bin/env python3
"""An agent's session with `sandboxctl mcp`, driven by the official MCP Python SDK over stdio.

It lists the tools and checks every schema is valid JSON Schema, creates (then ensures) a
sandbox, writes, lists and reads a file, lists, gets and extends the sandbox, pushes and pulls
its workspace, takes and releases a lock, sees the git tools refuse a workspace that is no
repository, publishes artifacts (text and base64), lists them PENDING, reads them back equal,
sees its own review refused under four eyes and, in a second session with the reviewer's key
(SANDBOXD_REVIEWER_API_KEY, an admin who is not the publisher), approves one, runs a command whose output must arrive as progress
notifications before it ends, cancels a long command and checks the process is gone, reads the
templates and connection resources, gets structured errors for a bad template and a bad
argument, and destroys the sandbox. Prints `mcp agent example: OK` and exits 0 on success.

    python3 clients/python/mcp_agent.py --sandboxctl target/debug/sandboxctl \\
        --addr http://127.0.0.1:50051 --template <a template with the process runtime>

The API key comes from SANDBOXD_API_KEY, the reviewer's from SANDBOXD_REVIEWER_API_KEY (the
tenant must require four eyes for artifacts). With --http URL it talks to a running
`sandboxctl mcp --listen` over streamable HTTP instead, sending the key as
`Authorization: Bearer` (and first checks that a client without a key is refused). With
--expect-no-tools it only checks that the server lists no tools (for a gRPC server that offers
none of sandboxd's services).
"""

import argparse
import base64
import os
import sys
import time

try:
    import anyio
    import httpx2
    import jsonschema
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client
except ImportError as missing:
    sys.exit(
        f"error: a Python package is missing ({missing}); install them with "
        "python3 -m pip install -r clients/python/requirements-mcp.txt"
    )

EXPECTED_TOOLS = {
    "sandbox_create", "sandbox_list", "sandbox_get", "sandbox_extend", "sandbox_release",
    "sandbox_destroy", "exec", "file_list", "file_read", "file_write", "workspace_push",
    "workspace_pull", "git_status", "git_diff", "git_pull", "git_push", "lock_acquire",
    "lock_release", "publish_artifact", "list_artifacts", "get_artifact", "read_artifact",
    "review_artifact",
}

# The report the agent publishes; tests/mcp.rs checks the stored bytes equal it.
REPORT = "# Login fix\nThe agent changed notes/hello.txt.\n"


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def processes_with(marker):
    """Host pids whose command line holds `marker` (not the sh or bwrap wrapping it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "sh -c" not in cmdline and "bwrap" not in cmdline:
            found.append(int(entry))
    return found


async def eventually(what, seconds, condition):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await anyio.sleep(0.05)


async def call(client, tool, arguments, **kwargs):
    """A tool call that must succeed; returns its structured result."""
    result = await client.call_tool(tool, arguments, **kwargs)
    text = " ".join(getattr(block, "text", "") for block in result.content)
    check(not result.is_error, f"{tool} failed: {text}")
    check(result.structured_content is not None, f"{tool} returned no structured content")
    return result.structured_content


async def call_failing(client, tool, arguments):
    """A tool call that must fail with a tool error; returns (text, structured error)."""
    result = await client.call_tool(tool, arguments)
    text = "\n".join(getattr(block, "text", "") for block in result.content)
    check(result.is_error, f"{tool} {arguments} should have failed: {text}")
    return text, (result.structured_content or {}).get("error", {})


def check_schemas(tools):
    names = {tool.name for tool in tools}
    check(names == EXPECTED_TOOLS, f"tools differ: missing {EXPECTED_TOOLS - names}, extra {names - EXPECTED_TOOLS}")
    for tool in tools:
        check(len(tool.description or "") > 40, f"{tool.name} has no real description")
        for kind, schema in (("input", tool.input_schema), ("output", tool.output_schema)):
            check(schema is not None, f"{tool.name} has no {kind} schema")
            jsonschema.validators.validator_for(schema).check_schema(schema)
            check(schema.get("type") == "object", f"{tool.name} {kind} schema is not an object")
    create = next(tool for tool in tools if tool.name == "sandbox_create").input_schema
    validator = jsonschema.validators.validator_for(create)(create)
    check(validator.is_valid({"template": "t", "name": "n", "ensure": True}), "a valid create is refused")
    check(not validator.is_valid({"name": "n"}), "the create schema does not require a template")
    check(not validator.is_valid({"template": "t", "colour": "red"}), "unknown arguments pass the schema")


async def artifacts(client, connect_reviewer):
    """Publishes, lists, reads and (refused, then by the reviewer) reviews artifacts."""
    report = await call(client, "publish_artifact", {"sandbox": "mcp-box", "type": "text", "title": "login fix report", "text": REPORT, "sandbox_path": "notes/report.md", "conversation_id": "mcp-conv-1", "request_id": "mcp-report-1"})
    check(report["review_state"] == "PENDING" and report["size_bytes"] == len(REPORT.encode()), f"{report}")
    check(report["content_type"] == "text/plain" and report["preview"] == REPORT, f"{report}")
    again = await call(client, "publish_artifact", {"sandbox": "mcp-box", "type": "text", "title": "login fix report", "text": REPORT, "request_id": "mcp-report-1"})
    check(again["artifact_id"] == report["artifact_id"], f"the request_id made another: {again}")
    binary = bytes(range(256))
    blob = await call(client, "publish_artifact", {"sandbox": "mcp-box", "type": "other", "title": "bytes", "base64": base64.b64encode(binary).decode()})
    big = await call(client, "publish_artifact", {"sandbox": "mcp-box", "type": "log", "title": "long log", "text": "a" * (1024 * 1024 + 1)})

    listed = await call(client, "list_artifacts", {"sandbox": "mcp-box", "review_state": "pending"})
    check({a["artifact_id"] for a in listed["artifacts"]} == {report["artifact_id"], blob["artifact_id"], big["artifact_id"]}, f"{listed}")
    check(all(a["review_state"] == "PENDING" for a in listed["artifacts"]), f"{listed}")
    read = await call(client, "read_artifact", {"artifact": report["artifact_id"]})
    check(read["content"] == REPORT and read["encoding"] == "utf-8", f"{read}")
    read = await call(client, "read_artifact", {"artifact": blob["artifact_id"]})
    check(read["encoding"] == "base64" and base64.b64decode(read["content"]) == binary, f"{read}")
    text, error = await call_failing(client, "read_artifact", {"artifact": big["artifact_id"]})
    check(error.get("reason") == "ARTIFACT_TOO_LARGE_TO_READ" and "1048577 bytes" in text, text)
    text, error = await call_failing(client, "publish_artifact", {"sandbox": "mcp-box", "type": "text", "title": "t", "text": "x", "base64": "eA=="})
    check(error.get("code") == "INVALID_ARGUMENT" and error["field_violations"][0]["field"] == "base64", text)
    text, error = await call_failing(client, "publish_artifact", {"sandbox": "mcp-box", "type": "movie", "title": "t", "text": "x"})
    check(error["field_violations"][0]["field"] == "type", text)

    # Four eyes: the publisher may not review its own artifact, and it stays PENDING.
    text, error = await call_failing(client, "review_artifact", {"artifact": report["artifact_id"], "decision": "approve"})
    check(error.get("code") == "PERMISSION_DENIED" and error.get("reason") == "FOUR_EYES_REQUIRED", text)
    check("four eyes" in text and not error.get("retryable"), text)
    got = await call(client, "get_artifact", {"artifact": report["artifact_id"]})
    check(got["review_state"] == "PENDING", f"{got}")
    print("artifacts: the publisher's own review was refused (four eyes)")

    async with connect_reviewer() as reviewer:
        approved = await call(reviewer, "review_artifact", {"artifact": report["artifact_id"], "decision": "approve", "comment": "looks right", "etag": got["etag"]})
        check(approved["review_state"] == "APPROVED" and approved["reviewer"] != approved["publisher"], f"{approved}")
        text, error = await call_failing(reviewer, "review_artifact", {"artifact": report["artifact_id"], "decision": "reject"})
        check(error.get("reason") == "ARTIFACT_ALREADY_REVIEWED", text)
    listed = await call(client, "list_artifacts", {"sandbox": "mcp-box", "review_state": "APPROVED"})
    check([a["artifact_id"] for a in listed["artifacts"]] == [report["artifact_id"]], f"{listed}")
    print(f"artifact_id={report['artifact_id']}")
    print("artifacts: published, listed PENDING, read back equal, approved by the reviewer")


async def session(client, template, connect_reviewer):
    check_schemas((await client.list_tools()).tools)
    print(f"tools: {len(EXPECTED_TOOLS)} listed, every schema valid")

    resources = {str(r.uri) for r in (await client.list_resources()).resources}
    check("sandboxd://templates" in resources, f"no templates resource in {resources}")
    templates = (await client.read_resource("sandboxd://templates")).contents[0].text
    check(f'"{template}"' in templates, f"{template} missing from {templates}")

    created = await call(client, "sandbox_create", {"template": template, "name": "mcp-box", "ensure": True, "labels": {"via": "mcp"}, "ttl": "1h"})
    sandbox = created["sandbox"]
    check(created["created"] and sandbox["state"] == "RUNNING", f"not created running: {created}")
    again = await call(client, "sandbox_create", {"template": template, "name": "mcp-box", "ensure": True})
    check(not again["created"] and again["sandbox"]["sandbox_id"] == sandbox["sandbox_id"], f"ensure made another: {again}")
    print(f"sandbox_id={sandbox['sandbox_id']}")

    written = await call(client, "file_write", {"sandbox": "mcp-box", "path": "notes/hello.txt", "content": "hello from an agent\n"})
    check(written["bytes_written"] == 20, f"{written}")
    listed = await call(client, "file_list", {"sandbox": "mcp-box", "path": "notes"})
    check([f["path"] for f in listed["files"]] == ["notes/hello.txt"], f"{listed}")
    read = await call(client, "file_read", {"sandbox": sandbox["sandbox_id"], "path": "notes/hello.txt"})
    check(read["content"] == "hello from an agent\n" and read["encoding"] == "utf-8" and not read["more"], f"{read}")

    listed = await call(client, "sandbox_list", {"labels": {"via": "mcp"}, "states": ["running"]})
    check([s["name"] for s in listed["sandboxes"]] == ["mcp-box"], f"{listed}")
    got = await call(client, "sandbox_get", {"sandbox": "mcp-box"})
    check(got["sandbox_id"] == sandbox["sandbox_id"] and got["labels"] == {"via": "mcp"}, f"{got}")
    extended = await call(client, "sandbox_extend", {"sandbox": "mcp-box", "by": "30m"})
    check(extended["expire_time"] > sandbox["expire_time"], f"{extended} vs {sandbox}")
    text, error = await call_failing(client, "sandbox_release", {"sandbox": "mcp-box"})
    check(error.get("code") == "FAILED_PRECONDITION", f"not pooled, yet: {text}")

    pushed = await call(client, "workspace_push", {"sandbox": "mcp-box"})
    check(pushed["files_transferred"] >= 1, f"{pushed}")
    ran = await call(client, "exec", {"sandbox": "mcp-box", "command": ["rm", "notes/hello.txt"]})
    check(ran["exit_code"] == 0, f"{ran}")
    pulled = await call(client, "workspace_pull", {"sandbox": "mcp-box"})
    check(pulled["files_transferred"] >= 1 and not pulled["skipped"], f"{pulled}")
    read = await call(client, "file_read", {"sandbox": "mcp-box", "path": "notes/hello.txt"})
    check(read["content"] == "hello from an agent\n", f"pulled back: {read}")

    lease = await call(client, "lock_acquire", {"resource": "mcp-test-lock", "ttl": "30s"})
    check(lease["owner_token"] and lease["fencing_token"] > 0, f"{lease}")
    text, error = await call_failing(client, "lock_acquire", {"resource": "mcp-test-lock", "wait": "0"})
    check(error.get("code") == "ABORTED" and error.get("retryable"), f"{text}")
    released = await call(client, "lock_release", {"resource": "mcp-test-lock", "owner_token": lease["owner_token"]})
    again = await call(client, "lock_release", {"resource": "mcp-test-lock", "owner_token": lease["owner_token"]})
    check(released["released"] and not again["released"], f"{released} {again}")

    await artifacts(client, connect_reviewer)

    # The workspace is no git repository: every git tool says so, as a structured error.
    for tool in ("git_status", "git_diff", "git_pull", "git_push"):
        text, error = await call_failing(client, tool, {"sandbox": "mcp-box"})
        check(error.get("code") == "FAILED_PRECONDITION", f"{tool}: {text}")
    print("lifecycle, sync, locks and git tools answered")

    progress = []

    async def on_progress(value, total, message):
        progress.append((time.monotonic(), value, message or ""))

    ran = await call(client, "exec", {"sandbox": "mcp-box", "command": ["sh", "-c", "cat notes/hello.txt; sleep 3; echo second >&2; echo done"]}, progress_callback=on_progress)
    ended = time.monotonic()
    check(ran["exit_code"] == 0 and ran["stdout_tail"] == "hello from an agent\ndone\n", f"{ran}")
    check(ran["stderr_tail"] == "second\n", f"{ran}")
    check(progress, "no progress notification arrived")
    first_time, _, first_message = progress[0]
    check("hello from an agent" in first_message and "done" not in first_message, f"first progress: {progress}")
    check(ended - first_time > 2.0, f"the first progress came {ended - first_time:.2f} s before the end, not before the 3 s sleep")
    check(any("[stderr] second" in m for _, _, m in progress), f"stderr progress missing: {progress}")
    values = [v for _, v, _ in progress]
    check(values == sorted(set(values)), f"progress does not grow: {values}")
    print(f"exec: {len(progress)} progress notifications, the first {ended - first_time:.1f} s before the end")

    marker = "600.0613"
    started = anyio.Event()

    async def on_started(value, total, message):
        started.set()

    async with anyio.create_task_group() as group:
        group.start_soon(client.call_tool, "exec", {"sandbox": "mcp-box", "command": ["sh", "-c", f"echo started; exec sleep {marker}"]}, None, on_started)
        with anyio.fail_after(15):
            await started.wait()
        await eventually("the long command runs", 10, lambda: processes_with(marker))
        group.cancel_scope.cancel()
    await eventually("the cancelled command is killed", 10, lambda: not processes_with(marker))
    print("cancel: the cancelled exec's process is gone")

    connection = (await client.read_resource("sandbox://mcp-box/connection")).contents[0].text
    check('"schema": "sandbox_' in connection and "REDIS_PREFIX" in connection, connection)

    text, error = await call_failing(client, "sandbox_create", {"template": "no-such-template"})
    check(error.get("code") in ("NOT_FOUND", "INVALID_ARGUMENT"), f"{error}")
    check("TEMPLATE_NOT_FOUND" in text or "template" in [v["field"] for v in error.get("field_violations", [])], text)
    check(error.get("code", "") in text and "What to do:" in text, text)
    text, error = await call_failing(client, "sandbox_extend", {"sandbox": "mcp-box", "by": "forever"})
    check(error.get("code") == "INVALID_ARGUMENT" and error["field_violations"][0]["field"] == "by", f"{error}")
    check("- by: " in text, text)
    text, error = await call_failing(client, "file_read", {"sandbox": "mcp-box", "file": "notes/hello.txt"})
    check(error.get("code") == "INVALID_ARGUMENT" and "file" in [v["field"] for v in error["field_violations"]], f"{error}")
    print("errors: structured, with code, reason and fields")

    destroyed = await call(client, "sandbox_destroy", {"sandbox": "mcp-box", "reason": "agent done"})
    check(destroyed["state"] == "DESTROYED", f"{destroyed}")


def http_transport(url, api_key):
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = httpx2.Timeout(30.0, read=300.0)
    return streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=timeout))


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxctl")
    parser.add_argument("--addr")
    parser.add_argument("--http", metavar="URL")
    parser.add_argument("--template")
    parser.add_argument("--expect-no-tools", action="store_true")
    args = parser.parse_args()
    api_key = os.environ.get("SANDBOXD_API_KEY", "")
    reviewer_key = os.environ.get("SANDBOXD_REVIEWER_API_KEY", "")

    def server_with(key):
        """The MCP server to talk to, calling sandboxd with `key`."""
        if args.http:
            return http_transport(args.http, key)
        env = {"SANDBOXD_ADDR": args.addr, "SANDBOXD_API_KEY": key}
        return StdioServerParameters(command=args.sandboxctl, args=["mcp"], env=env)

    if args.http:
        async with Client(http_transport(args.http, None)) as anonymous:
            text, error = await call_failing(anonymous, "sandbox_list", {})
            check(error.get("code") == "UNAUTHENTICATED", f"a client without a key got: {text}")
        print("http: a client without an API key is refused by sandboxd")
    else:
        check(args.sandboxctl and args.addr, "--sandboxctl and --addr are required without --http")
    async with Client(server_with(api_key)) as client:
        if args.expect_no_tools:
            tools = (await client.list_tools()).tools
            check(tools == [], f"tools listed by a server that offers none: {[t.name for t in tools]}")
        else:
            check(args.template, "--template is required")
            check(reviewer_key, "SANDBOXD_REVIEWER_API_KEY is required (an admin who is not the publisher)")
            await session(client, args.template, lambda: Client(server_with(reviewer_key)))
    print("mcp agent example: OK")


if __name__ == "__main__":
    anyio.run(main)
