"""Runs one independent SCIM conformance checker against a live endpoint and prints its results
as one JSON document on stdout, in a shape common to every checker:

    {"tool": "scim2-tester", "version": "0.5.2",
     "checks": [{"name": "...", "outcome": "pass" | "fail" | "skip", "status": "...", "detail": "..."}]}

`name` is stable across runs (no random values in it) and unique within a run; it is what
docs/conformance.md lists. Usage (tests/conformance.rs runs it with the venv's python):

    driver.py scim2-tester --url http://127.0.0.1:PORT/scim/v2 --token T --domain D
    driver.py scim-sanity  --url http://127.0.0.1:PORT/scim/v2 --token T --domain D
"""

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import uuid


def _unique(checks):
    """Suffixes ` #2`, ` #3`, ... to names that occur more than once, in order of appearance."""
    seen = {}
    for check in checks:
        count = seen.get(check["name"], 0) + 1
        seen[check["name"]] = count
        if count > 1:
            check["name"] = f"{check['name']} #{count}"
    return checks


def run_scim2_tester(url, token, domain, timeout):
    import httpx2
    import scim2_tester.filling
    from scim2_client.engines.httpx2 import SyncSCIMClient
    from scim2_tester import Status, check_server

    # scim2-tester fills `userName` (like every string without examples) with a bare UUID and has
    # no option to change it. The endpoint accepts only addresses in the tenant's domains and
    # answers anything else with 400 invalidValue (RFC 7644 §3.12), so userName values are given as
    # fresh addresses in the tenant's domain; every other generated value is the tool's own.
    original = scim2_tester.filling.get_random_example_value

    def example_value(path):
        if str(path).rsplit(":", 1)[-1] == "userName":
            return f"{uuid.uuid4()}@{domain}"
        return original(path)

    scim2_tester.filling.get_random_example_value = example_value

    http = httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    client = SyncSCIMClient(http)
    results = check_server(client)

    passing = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE}
    # How many results each checker gave, to name the results of those that give several.
    per_checker = {}
    for result in results:
        per_checker[(result.resource_type, result.title)] = per_checker.get((result.resource_type, result.title), 0) + 1
    position = {}
    checks = []
    for result in results:
        key = (result.resource_type, result.title)
        position[key] = position.get(key, 0) + 1
        name = result.title or "?"
        if result.resource_type:
            name = f"{result.resource_type}.{name}"
        data = result.data if isinstance(result.data, dict) else {}
        reason = str(result.reason or "")
        first_word = reason.split(" ", 1)[0]
        if isinstance(data.get("urn"), str):
            # PATCH checkers: one result per attribute.
            name = f"{name}[{data['urn']}]"
        elif result.title and result.title.endswith("_with_attributes") and per_checker[key] == 2:
            # One request with `attributes`, then one with `excludedAttributes`, in that order.
            name = f"{name}[{('attributes', 'excludedAttributes')[position[key] - 1]}]"
        elif first_word in ("GET", "POST", "PUT", "PATCH", "DELETE") and per_checker[key] > 1:
            # `*_endpoint_methods`: one result per HTTP method.
            name = f"{name}[{first_word}]"
        if result.status == Status.SKIPPED:
            outcome = "skip"
        elif result.status in passing:
            outcome = "pass"
        else:
            outcome = "fail"
        checks.append(
            {"name": name, "outcome": outcome, "status": result.status.name, "detail": reason}
        )
    return _unique(checks)


def run_scim_sanity(url, token, domain, timeout):
    # The tool's own command line, strict mode (RFC as written, no vendor allowances). Its
    # `--user-domain` only takes effect together with `--profile entra`, a profile for probing
    # Microsoft's own SCIM server that adds Entra-only extension schemas; the generated userName
    # (`scim-sanity-test-<hex>@example.com`) is replaced with `--extra-user-fields` instead.
    user_name = f"scim-sanity-test-{uuid.uuid4().hex[:8]}@{domain}"
    command = [
        os.path.join(os.path.dirname(sys.executable), "scim-sanity"),
        "probe", url,
        "--token", token,
        "--extra-user-fields", json.dumps({"userName": user_name}),
        "--strict",
        "--json-output",
        "--timeout", str(timeout),
        "--i-accept-side-effects",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"scim-sanity printed no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    outcomes = {"pass": "pass", "warn": "fail", "fail": "fail", "error": "fail", "skip": "skip"}
    checks = []
    for result in report["results"]:
        checks.append(
            {
                "name": result["name"],
                "outcome": outcomes.get(result["status"], "fail"),
                "status": result["status"],
                "detail": " ".join(filter(None, [result.get("message"), result.get("details")])),
            }
        )
    return _unique(checks)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tool", choices=["scim2-tester", "scim-sanity"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--timeout", type=int, default=20, help="per request, seconds")
    args = parser.parse_args()
    run = run_scim2_tester if args.tool == "scim2-tester" else run_scim_sanity
    checks = run(args.url, args.token, args.domain, args.timeout)
    version = importlib.metadata.version(args.tool)
    json.dump({"tool": args.tool, "version": version, "checks": checks}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
