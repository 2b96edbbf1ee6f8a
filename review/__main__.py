"""``python -m review``: the review console, a web page on 127.0.0.1 for the NEEDS_REVIEW queue.

    python -m review --table T --bucket B [--model DEST] [--port 8765] [--second-opinion 0.05]
    python -m review --stack momee-cataloguer   # T and B from the deployed stack's outputs
    python -m review [--reviewer NAME]   # the local stack that `local_stack --serve` keeps up

``T`` and ``B`` are the stack's ``CatalogueTableName`` and ``UploadsBucketName`` outputs; the
operator's AWS credentials are used as usual, and the reviewer is their identity's ARN (STS
GetCallerIdentity): against AWS nobody chooses their own name. ``--reviewer`` names the reviewer
on the local stack only (its credentials are fake). The category list is exactly the labels of
the published model (``--model``: a publish destination, folder or ``s3://``; default
``./artifacts`` when it has one); without them the console does not start. Each console claims its
own small batch of photos, so a team starts one console each on the same table.
"""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser

import boto3
from botocore.config import Config

from local_stack.stack import point_boto3_at
from local_stack.state import read_state, state_path
from review.console import Console
from review.model_labels import model_labels
from review.server import DEFAULT_PORT, LOOPBACK, ReviewServer
from review.stack_outputs import stack_names

NO_STACK_HINT = (
    "No --table/--bucket and no local stack running. Start one in another terminal with "
    "`python -m local_stack --serve` (it writes {path}), or name the deployed stack's "
    "table and bucket (outputs CatalogueTableName and UploadsBucketName)."
)


def caller_arn(session: boto3.session.Session) -> str:
    return session.client("sts").get_caller_identity()["Arn"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m review", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--stack",
        help="deployed stack: read --table and --bucket from its outputs (default: none)",
    )
    parser.add_argument(
        "--table",
        help="catalogue table, stack output CatalogueTableName (default: the running local "
        "stack's)",
    )
    parser.add_argument(
        "--bucket",
        help="uploads bucket, stack output UploadsBucketName (default: the running local stack's)",
    )
    parser.add_argument("--region", help="AWS region (default: your AWS configuration's)")
    parser.add_argument(
        "--reviewer", help="who decides, on the local stack only (default: your AWS identity's ARN)"
    )
    parser.add_argument(
        "--model", help="published model whose labels to offer (default: ./artifacts)"
    )
    parser.add_argument(
        "--host", default=LOOPBACK, help="loopback address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port, 0 for any free one (default: %(default)s)",
    )
    parser.add_argument(
        "--open", action="store_true", help="open the page in a browser (default: off)"
    )
    parser.add_argument(
        "--second-opinion",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of photos decided by two reviewers, 0..1 (default: %(default)s)",
    )
    arguments = parser.parse_args(argv)

    model_uri = arguments.model
    local = not (arguments.stack or arguments.table or arguments.bucket)
    if arguments.reviewer and not local:
        parser.error("--reviewer is for the local stack; against AWS your identity decides")
    if arguments.stack:
        session = boto3.session.Session(region_name=arguments.region)
        arguments.table, arguments.bucket = stack_names(
            session.client("cloudformation"), arguments.stack
        )
    elif arguments.table and arguments.bucket:
        session = boto3.session.Session(region_name=arguments.region)
    elif arguments.table or arguments.bucket:
        parser.error("--table and --bucket go together")
    else:
        state = read_state()
        if state is None:
            print(NO_STACK_HINT.format(path=state_path()), file=sys.stderr)
            return 2

        point_boto3_at(state.endpoint_url)  # fake credentials: never real AWS
        session = boto3.session.Session(region_name=state.region)
        arguments.table, arguments.bucket = state.table, state.bucket
        model_uri = model_uri or state.model_uri
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)
    # SigV4 presigned URLs carry their own lifetime (X-Amz-Expires), as AWS recommends.
    s3 = session.client("s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"))
    reviewer = (arguments.reviewer if local else None) or caller_arn(session)
    try:
        console = Console(
            dynamodb=dynamodb,
            s3=s3,
            table=arguments.table,
            bucket=arguments.bucket,
            reviewer=reviewer,
            labels=model_labels(model_uri, s3_client=s3),
            second_opinion_rate=arguments.second_opinion,
        )
        server = ReviewServer(console, host=arguments.host, port=arguments.port)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    remaining = console.progress()["remaining"]
    print(
        f"Review console for table {arguments.table}, bucket {arguments.bucket}: {server.url}\n"
        f"{remaining}{'+' if remaining >= 1000 else ''} photos wait for review; deciding as "
        f"{reviewer}. Ctrl-C stops.",
        flush=True,
    )
    if arguments.open:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        console.release_all()  # the photos this console held go back to the team at once
    return 0


if __name__ == "__main__":
    sys.exit(main())
