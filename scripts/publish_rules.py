#!/usr/bin/env python3
"""Publish routing rules to the rules blob (ROUTING_RULES_URI) without redeploying; running apps pick them up within
ROUTING_RULES_REFRESH_SECONDS (shared/rules_store.py).

    python scripts/publish_rules.py --pull routing.json   # download the live rules, their ETag in routing.json.etag
    python scripts/publish_rules.py routing.json           # validate, then upload over the version you pulled
    python scripts/publish_rules.py routing.json --if-absent --wait 300   # the post-provision step (first upload)

The file is validated first, exactly as the app does (``python -m shared.routing validate``); an invalid file is
never uploaded. The upload carries an ETag precondition, so two people publishing at once cannot silently overwrite
each other: the upload is ``If-Match`` the version the edit started from (``--if-match``, else the ``FILE.etag``
left by ``--pull``, else the blob's ETag read just before uploading), or ``If-None-Match: *`` when the blob does not
exist yet. The loser of a race uploads nothing and is told to pull, re-apply and publish again (exit code 3).

Where: ``--uri`` or ROUTING_RULES_URI (azd exports it after provisioning). Auth: the account key of
``--connection-string`` / CALL_STORAGE_CONNECTION_STRING (Azurite locally), else your Entra sign-in (azd or az login;
the deployer gets Storage Blob Data Contributor on the rules container, infra/modules/rbac.bicep).

Exit codes: 0 published (or pulled), 1 invalid rules, 2 usage, auth or storage error, 3 conflict (someone else
published first).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: the app's own validator

from shared.routing import RoutingRulesError  # noqa: E402
from shared.rules_cli import UsageError, read_file, validate_bytes  # noqa: E402
from shared.rules_store import blob_client  # noqa: E402

EXIT_OK, EXIT_INVALID, EXIT_ERROR, EXIT_CONFLICT = 0, 1, 2, 3


def sidecar(path: str) -> Path:
    return Path(path + ".etag")


def client_for(args: argparse.Namespace) -> Any:
    uri = args.uri or os.environ.get("ROUTING_RULES_URI", "").strip()
    if not uri:
        raise UsageError("no rules blob: pass --uri or set ROUTING_RULES_URI (`azd env get-values` has it)")
    connection_string = args.connection_string or os.environ.get("CALL_STORAGE_CONNECTION_STRING", "").strip() or None
    return blob_client(uri, connection_string=connection_string,
                       client_id=os.environ.get("AZURE_CLIENT_ID", "").strip() or None if args.identity else None)


def pull(client: Any, path: str) -> int:
    download = client.download_blob()
    Path(path).write_bytes(download.readall())
    etag = str(download.properties.etag)
    sidecar(path).write_text(etag + "\n")
    print(f"pulled {client.url} (ETag {etag}) into {path}; edit it, then: python scripts/publish_rules.py {path}")
    return EXIT_OK


def publish(client: Any, path: str, data: bytes, if_match: str | None) -> int:
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
    from azure.storage.blob import ContentSettings

    base = if_match
    if base is None and sidecar(path).is_file():
        base = sidecar(path).read_text().strip() or None
    if base is None:
        try:
            base = str(client.get_blob_properties().etag)
        except ResourceNotFoundError:
            base = None  # first publish: the blob must still not exist when the upload lands
    condition: dict[str, Any] = ({"etag": base, "match_condition": MatchConditions.IfNotModified} if base
                                 else {"match_condition": MatchConditions.IfMissing})
    try:
        result = client.upload_blob(data, overwrite=True, content_settings=ContentSettings(
            content_type="application/json"), **condition)
    except (ResourceModifiedError, ResourceExistsError):  # 412 If-Match failed / 409 If-None-Match: * failed
        try:
            now = str(client.get_blob_properties().etag)
        except Exception:  # noqa: BLE001 - only for the message
            now = "unknown"
        expected = f"ETag {base}" if base else "no rules blob"
        print(f"conflict: the rules blob changed since your version ({expected}; it is now ETag {now}): someone "
              f"else published first. Nothing was uploaded. Pull the live rules (--pull {path}), re-apply your "
              "change and publish again.", file=sys.stderr)
        return EXIT_CONFLICT
    etag = str(result["etag"])
    if sidecar(path).is_file():
        sidecar(path).write_text(etag + "\n")  # the next publish from this copy builds on the version just made
    print(f"published {path} to {client.url}: ETag {etag} (was {base or 'none'}); running apps load it within "
          "ROUTING_RULES_REFRESH_SECONDS")
    return EXIT_OK


def publish_if_absent(client: Any, path: str, data: bytes, wait: float) -> int:
    """The post-provision step: upload the packaged rules only when no rules blob exists yet, so re-provisioning
    never overwrites rules published since. Retries 403 for ``wait`` seconds while a new role assignment propagates."""
    from azure.core.exceptions import HttpResponseError

    deadline = time.monotonic() + wait
    while True:
        try:
            try:
                etag = str(client.get_blob_properties().etag)
            except Exception as exc:  # noqa: BLE001 - 404 is the normal first run
                if getattr(exc, "status_code", None) != 404:
                    raise
            else:
                print(f"rules blob {client.url} exists (ETag {etag}); left as it is (publish changes with "
                      "scripts/publish_rules.py)")
                return EXIT_OK
            return publish(client, path, data, "")
        except HttpResponseError as exc:
            if exc.status_code != 403 or time.monotonic() > deadline:
                raise
            print("rules blob: access denied, waiting for the role assignment to propagate...", file=sys.stderr)
            time.sleep(15)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="the rules JSON file")
    parser.add_argument("--uri", help="the rules blob URL (default: ROUTING_RULES_URI)")
    parser.add_argument("--connection-string", help="storage connection string (default: "
                                                    "CALL_STORAGE_CONNECTION_STRING; else Entra sign-in)")
    parser.add_argument("--identity", action="store_true",
                        help="use the managed identity of AZURE_CLIENT_ID (inside Azure) instead of your sign-in")
    parser.add_argument("--if-match", metavar="ETAG",
                        help="the ETag your edit started from (default: FILE.etag); '' = expect no blob yet")
    parser.add_argument("--pull", action="store_true", help="download the live rules into FILE instead")
    parser.add_argument("--if-absent", action="store_true",
                        help="upload only when there is no rules blob yet (the post-provision step)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="with --if-absent: retry 'access denied' this long (new role assignments propagate)")
    args = parser.parse_args(argv)
    try:
        client = client_for(args)
        if args.pull:
            return pull(client, args.file)
        data = read_file(args.file)
        validate_bytes(data, args.file)
        if args.if_absent:
            return publish_if_absent(client, args.file, data, args.wait)
        return publish(client, args.file, data, args.if_match)
    except RoutingRulesError as exc:
        print(f"invalid: {exc} (nothing was uploaded)", file=sys.stderr)
        return EXIT_INVALID
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - storage or auth failure: one line, not a traceback
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
