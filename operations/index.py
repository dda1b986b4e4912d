"""`loom index`: embed a catalog into a search index bundle, and update a bundle without a rebuild.

    loom index build  --catalog DIR --model CLIP_DIR --out INDEX_DIR [--batch 64] [--article-types all]
    loom index add    --index INDEX_DIR --catalog DIR --model CLIP_DIR [--ids 1,2,...]
    loom index remove --index INDEX_DIR --ids 1,2,...
    loom index import --embeddings BATCH.jsonl --catalog DIR --model CLIP_DIR --out INDEX_DIR
    loom index push   --index INDEX_DIR --endpoint https://... --region R [--kind domain|serverless] [--name NAME]
                      (makes the OpenSearch index equal to the bundle: writes what changed, deletes what is gone)

The catalog is read with training/catalog.py (bad rows, JSON and images are skipped and counted, as in
`prepare`); photos are opened a batch at a time and each batch's vectors are appended to a file on disk,
so a 44,000-product catalog never sits in memory as images. `add` replaces products whose id is already
in the bundle. To serve a bundle, put it at MODEL_DIR/index of the CLIP artifact (loom.artifact.INDEX_DIR).
At catalog scale on AWS, embed with Batch Transform instead: `loom batch --model-name <the CLIP model>
--out embeddings.jsonl` sends the photos (no --attributes), and `loom index import` turns its
{"id", "embedding"} lines into a bundle, with the product table from the catalog (docs/search.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.api.visual.opensearch import OpenSearchClient, OpenSearchError, document
from runtime.search_index import load_embeddings
from training.catalog import DEFAULT_ARTICLE_TYPES
from training.search.index_build import DEFAULT_BATCH, add, build, import_embeddings, remove, skipped_lines_text


def push(index_dir: Path, endpoint: str, region: str, *, kind: str = "domain", name: str = "loom-products",
         batch: int = 500, client=None) -> dict:
    """Make an OpenSearch index equal to a bundle (created with Loom's mapping when missing): missing, changed
    and duplicated products are written, products the bundle lacks are deleted, unchanged ones are left alone.
    Re-running after an interruption finishes the job (inference/api/visual/opensearch.py, OpenSearchClient.push).

    The hybrid search pipeline is set up on domains and Serverless collections alike; when OpenSearch refuses
    it (for example a data-access policy without the permission), the push goes on and says so: vector search
    works without it, hybrid queries do not."""
    embeddings, rows, manifest = load_embeddings(index_dir)
    client = client or OpenSearchClient(endpoint, region, kind)
    try:
        client.ensure_pipeline()
        pipeline = "ready"
    except OpenSearchError as exc:
        if exc.status >= 500:
            raise
        pipeline = f"refused ({exc.message}); hybrid queries will fail until it exists"
    created = client.ensure_index(name, manifest["dimension"], hybrid=False)
    counts = client.push(name, (document(row.to_dict(), vector) for row, vector in zip(rows, embeddings)), batch)
    return {"index": name, "created": created, **counts, "products": len(rows), "hybrid_pipeline": pipeline}


def parse_ids(text: str) -> set[str]:
    ids = {part.strip() for part in text.split(",") if part.strip()}
    if not ids:
        raise argparse.ArgumentTypeError("--ids needs at least one product id, comma-separated")
    return ids


def parse_article_types(text: str) -> tuple[str, ...] | None:
    return None if text.strip().lower() == "all" else tuple(t.strip() for t in text.split(",") if t.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom index", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = {"--batch": dict(type=int, default=DEFAULT_BATCH, help="photos embedded together (default 64)"),
              "--article-types": dict(type=parse_article_types, default=DEFAULT_ARTICLE_TYPES,
                                      help="comma-separated articleType values to index, or 'all' "
                                           "(default Shirts,Tshirts)")}
    build_cmd = commands.add_parser("build", help="embed a catalog into a new bundle")
    build_cmd.add_argument("--catalog", required=True, type=Path)
    build_cmd.add_argument("--model", required=True, type=Path, help="CLIP artifact folder")
    build_cmd.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    add_cmd = commands.add_parser("add", help="embed catalog products into an existing bundle")
    add_cmd.add_argument("--index", required=True, type=Path)
    add_cmd.add_argument("--catalog", required=True, type=Path)
    add_cmd.add_argument("--model", required=True, type=Path)
    add_cmd.add_argument("--ids", type=parse_ids, help="only these product ids (default every product)")
    for sub in (build_cmd, add_cmd):
        for flag, options in common.items():
            sub.add_argument(flag, **options)
    remove_cmd = commands.add_parser("remove", help="drop products from a bundle")
    remove_cmd.add_argument("--index", required=True, type=Path)
    remove_cmd.add_argument("--ids", required=True, type=parse_ids)
    import_cmd = commands.add_parser("import", help="a bundle from Batch Transform embeddings (JSON Lines)")
    import_cmd.add_argument("--embeddings", required=True, type=Path, help='loom batch output: {"id", "embedding"} lines')
    import_cmd.add_argument("--catalog", required=True, type=Path)
    import_cmd.add_argument("--model", required=True, type=Path, help="the CLIP artifact the job ran")
    import_cmd.add_argument("--out", required=True, type=Path)
    import_cmd.add_argument("--article-types", **common["--article-types"])
    push_cmd = commands.add_parser("push", help="bulk-ingest a bundle into Amazon OpenSearch (SigV4)")
    push_cmd.add_argument("--index", required=True, type=Path)
    push_cmd.add_argument("--endpoint", required=True, help="https:// endpoint of the domain or collection")
    push_cmd.add_argument("--region", required=True)
    push_cmd.add_argument("--profile", help="named AWS profile for the SigV4 credentials (default: the standard chain)")
    push_cmd.add_argument("--kind", choices=("domain", "serverless"), default="domain")
    push_cmd.add_argument("--name", default="loom-products", help="OpenSearch index name (default loom-products)")
    args = parser.parse_args(argv)
    if getattr(args, "batch", 1) < 1:
        parser.error("--batch must be at least 1")
    if args.command == "build":
        result = build(args.catalog, args.model, args.out, batch=args.batch, article_types=args.article_types)
        print(f"index built at {args.out}: {result['count']} products, {result['dimension']}-d, "
              f"skipped {result['skipped'] or 'none'}")
    elif args.command == "add":
        result = add(args.index, args.catalog, args.model, ids=args.ids, batch=args.batch,
                     article_types=args.article_types)
        print(f"index {args.index}: {result['added']} added, {result['replaced']} replaced, {result['count']} now")
    elif args.command == "import":
        result = import_embeddings(args.embeddings, args.catalog, args.model, args.out,
                                   article_types=args.article_types)
        where = skipped_lines_text(result)
        print(f"index built at {args.out} from {args.embeddings}: {result['count']} products, "
              f"skipped {result['skipped'] or 'none'}" + (f" ({where})" if where else ""))
    elif args.command == "push":
        credentials = None
        if args.profile:
            import boto3

            credentials = boto3.Session(profile_name=args.profile, region_name=args.region).get_credentials()
        client = OpenSearchClient(args.endpoint, args.region, args.kind, credentials=credentials)
        result = push(args.index, args.endpoint, args.region, kind=args.kind, name=args.name, client=client)
        print(f"pushed {args.index} to {args.endpoint} index {result['index']}"
              f"{' (created)' if result['created'] else ''}: {result['products']} products, {result['indexed']} "
              f"written, {result['unchanged']} unchanged, {result['removed_products']} removed "
              f"({result['deleted']} documents deleted); hybrid search pipeline {result['hybrid_pipeline']}")
    else:
        result = remove(args.index, args.ids)
        print(f"index {args.index}: {result['removed']} products removed, {result['count']} left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
