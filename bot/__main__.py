"""Linli's command line: python -m bot <command>."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")


def _cmd_train(args: argparse.Namespace) -> int:
    from bot.training import ensure_model

    path, seconds = ensure_model(force=args.force)
    if seconds is None:
        print(f"model up to date: {path}")
    else:
        print(f"trained {path} in {seconds:.1f} s")
    return 0


def _cmd_migrate(_args: argparse.Namespace) -> int:
    from bot.migrate import upgrade
    from bot.settings import Settings

    settings = Settings.from_env()
    upgrade(settings.database_url.reveal())
    print(f"database schema up to date: {settings.database_url_redacted}")
    return 0


def _cmd_seed(_args: argparse.Namespace) -> int:
    from bot.seed import seed_demo

    print(seed_demo())
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from bot.settings import Settings
    from bot.web import serve

    settings = Settings.from_env()
    serve(args.host or settings.host, args.port or settings.port)
    return 0


def _cmd_run(_args: argparse.Namespace) -> int:
    from bot.runner import run_all

    return run_all()


def classify_line(agent: Any, catalogue: Any, line: str) -> dict[str, Any]:
    """Classify one JSON line {"text": ...}; malformed input gives an error object, not a crash."""
    from bot.triage import triage

    try:
        item = json.loads(line)
    except ValueError:
        return {"error": 'each line must be JSON like {"text": "电梯坏了"}'}
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        return {"error": 'each line must be a JSON object with a "text" string'}
    text = item["text"][:500]
    parse = asyncio.get_event_loop().run_until_complete(agent.parse_message(text))
    return triage(parse, catalogue, text=text).as_dict()


def _cmd_classify(args: argparse.Namespace) -> int:
    from bot.nluservice import load_agent
    from bot.settings import Settings
    from routing.catalogue import load_catalogue

    # Rasa logs to stdout; only our JSON lines may go there, so stdout's file descriptor
    # is kept for them and everything else written to it goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    agent = load_agent()
    catalogue = load_catalogue(Settings.from_env().catalogue_path)
    asyncio.set_event_loop(asyncio.new_event_loop())
    for line in sys.stdin:
        if not line.strip():
            continue
        out.write(json.dumps(classify_line(agent, catalogue, line), ensure_ascii=False) + "\n")
        out.flush()
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from bot.chat import chat

    return chat(channel=args.channel, sender=args.sender, url=args.url)


def _cmd_eval_nlu(args: argparse.Namespace) -> int:
    from bot.evaluation import evaluate_file

    report = evaluate_file(args.file, out=args.out)
    print(json.dumps(report["summary"], ensure_ascii=False, indent=2))
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    from bot.app import build_app
    from bot.metrics import service_metrics

    app = build_app()
    with app.sessions() as session:
        report = service_metrics(session, catalogue=app.catalogue, roster=app.roster,
                                 now=app.clock(), by=args.by)
    print(json.dumps(report, ensure_ascii=False, indent=2, default=str))
    return 0


def _cmd_route(_args: argparse.Namespace) -> int:
    from bot.route_cli import main as route_main

    return route_main()


def _cmd_bench(args: argparse.Namespace) -> int:
    from bot.bench import main as bench_main

    return bench_main(args.out)


def main(argv: list[str] | None = None) -> int:
    """Run one command."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # twilio's client logs every request and header at INFO: a dozen lines per SMS.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench-classifier"]:
        from bot.bench_classifier import main as bench_classifier_main

        return bench_classifier_main(argv[1:])
    if argv[:1] == ["simulate"]:
        from bot.simulate import main as simulate_main

        return simulate_main(argv[1:])
    if argv[:1] == ["bench-console"]:
        from bot.bench_console import main as bench_console_main

        return bench_console_main(argv[1:])
    if argv[:1] == ["bench-channels"]:
        from bot.bench_channels import main as bench_channels_main

        return bench_channels_main(argv[1:])
    if argv[:1] == ["bench-routing"]:
        from bot.bench_routing import main as bench_routing_main

        return bench_routing_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bot", description="Linli (邻里) community assistant")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the Rasa model unless one matches the data")
    train.add_argument("--force", action="store_true", help="train even if a matching model exists")
    train.set_defaults(func=_cmd_train)

    commands.add_parser("migrate", help="upgrade the database schema").set_defaults(func=_cmd_migrate)
    commands.add_parser("seed", help="seed the demo community").set_defaults(func=_cmd_seed)
    commands.add_parser("run", help="start Rasa, the action server and the hub").set_defaults(func=_cmd_run)

    serve = commands.add_parser("serve", help="start the hub web server only")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_cmd_serve)

    commands.add_parser(
        "classify", help='read {"text": ...} JSON lines on stdin, write a triage per line'
    ).set_defaults(func=_cmd_classify)

    chat = commands.add_parser("chat", help="talk to the running stack as a resident")
    chat.add_argument("--channel", default="sms", choices=["web", "sms", "wechat", "voice"])
    chat.add_argument("--sender", default="13800000000")
    chat.add_argument("--url", default=None, help="hub URL (default http://LINLI_HOST:LINLI_PORT)")
    chat.set_defaults(func=_cmd_chat)

    commands.add_parser(
        "route", help="read ticket JSON lines on stdin, print each dispatch plan (writes nothing)"
    ).set_defaults(func=_cmd_route)

    metrics = commands.add_parser(
        "metrics", help="hops, first-time-right, response and resolution times, SLA compliance"
    )
    metrics.add_argument("--by", choices=["department", "grid", "worker", "category", "channel"])
    metrics.set_defaults(func=_cmd_metrics)

    from bot.accounts_cli import register as register_accounts
    from bot.staff_cli import register as register_staff

    register_staff(commands)
    register_accounts(commands)

    evaluate = commands.add_parser("eval-nlu", help="evaluate the model on the held-out file")
    evaluate.add_argument("--file", default="tests/nlu/heldout.yml")
    evaluate.add_argument("--out", default="var/reports/nlu-heldout.json")
    evaluate.set_defaults(func=_cmd_eval_nlu)

    bench = commands.add_parser("bench", help="run the benchmarks")
    bench.add_argument("--out", default="var/bench")
    bench.set_defaults(func=_cmd_bench)

    # Listed here for --help; their own options are parsed by their modules.
    commands.add_parser(
        "bench-routing",
        help="a simulated month of orders through the engine and store, against the relay",
    )
    commands.add_parser(
        "bench-channels",
        help="webhook latency per channel against /api/messages; WeChat's 5 s passive window",
    )
    commands.add_parser(
        "bench-console",
        help="agent console: 50 agents, 500 conversations; reply latency, fan-out, memory",
    )
    commands.add_parser(
        "simulate",
        help="be a resident on sms, wechat or voice: signed provider requests to the running stack",
    )
    commands.add_parser(
        "bench-classifier",
        help="train the request classifier and a TF-IDF + linear SVM baseline on labelled CSVs",
    )

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
