"""Writes the example models' data: ticket-router (JSON answers) and anysecret-cli (one shell command).

    .venv/bin/python models/data/make_examples.py          # from the repository root; rewrites the files below

Deterministic (fixed seeds, no clock): running it again gives byte-identical files, so git shows no change.
Every row comes from a template with paraphrases and slot values, so a tiny model can learn the task while no
benchmark prompt is a verbatim copy of a training prompt (each prompt is written once, in one file only).
Each model's training rows are split over two files, one per row format the pipeline reads:

models/data/ticket-router/          data.source; benchmark: a 'holdout' carved from it by hash
    tickets-chat.jsonl              {"messages": [{"role": "user", ...}, {"role": "assistant", ...}], "category"}
    tickets-pairs.jsonl             {"prompt", "completion", "category"}
models/data/anysecret-cli/train/    data.source
    howto-chat.jsonl, howto-pairs.jsonl
models/data/anysecret-cli/benchmark.jsonl   benchmark.source: fixed, prompts never in train/

`category` (the ticket's team, the command's intent) gives the evaluation report its per-category breakdown.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

# --- ticket-router: a support ticket -> {"team": ..., "priority": ...} --------------------------------------
TICKET_ROWS = 4000

ISSUES = {
    "billing": [
        "I was charged twice for my {plan} plan",
        "my invoice for {month} shows the wrong amount",
        "I want a refund for the {month} payment",
        "my card was declined when I tried to pay for {plan}",
        "why did my bill go up in {month}?",
        "I need to update the credit card on file",
        "the price of the {plan} plan on my receipt is wrong",
        "can I get an invoice with our VAT number for {month}?",
    ],
    "technical": [
        "the app crashes when I open {feature}",
        "{feature} shows error {code}",
        "sync stopped working on my {device}",
        "{feature} is very slow on my {device}",
        "the export button in {feature} does nothing",
        "I get a blank screen in {feature} after the update",
        "notifications stopped arriving on my {device}",
        "uploading a file to {feature} fails with error {code}",
    ],
    "account": [
        "I forgot my password and the reset email never comes",
        "please change the email address on my account",
        "how do I delete my account?",
        "my account is locked after too many sign-in attempts",
        "please add {person} as an admin of our workspace",
        "remove {person} from our workspace, they left the company",
        "I want to rename my workspace to {workspace}",
        "I lost the phone with my two-factor codes",
    ],
    "shipping": [
        "my order {order} has not arrived yet",
        "order {order} was delivered damaged",
        "can I change the delivery address for order {order}?",
        "tracking for order {order} has not moved in {days} days",
        "I received the wrong item in order {order}",
        "the courier left order {order} at the wrong house",
        "part of order {order} is missing from the box",
    ],
}
SLOTS = {
    "plan": ["Basic", "Pro", "Team", "Enterprise"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"],
    "feature": ["the editor", "the dashboard", "reports", "the calendar", "search", "the file browser"],
    "code": ["500", "403", "E42", "E17", "502", "409"],
    "device": ["iPhone", "Android phone", "laptop", "iPad", "Windows PC", "Mac"],
    "person": ["Maria", "Tom", "Priya", "Ken", "Lena", "Omar"],
    "workspace": ["Acme Ops", "Blue Fox", "North Team", "Studio 9"],
    "order": [str(n) for n in range(10231, 10291, 7)],
    "days": ["3", "5", "7", "10", "12"],
}
URGENCY = {  # the priority is what the customer says about it; no such sentence means normal
    "high": ["This is urgent.", "Please fix this ASAP!", "We are completely blocked.", "I need this solved today.",
             "Our whole team is stuck.", "Urgent, please!"],
    "low": ["No rush.", "Whenever you have time.", "Not urgent at all.", "Just letting you know.",
            "It can wait until next week.", "Low priority."],
    "normal": [""],
}
PRIORITY_WEIGHTS = {"high": 3, "normal": 4, "low": 3}
OPENERS = ["", "Hi, ", "Hello team, ", "Hey, ", "Good morning, ", "Hi support, "]
CLOSERS = ["", "Thanks.", "Thank you!", "Can you help?", "Regards, Sam.", "Please advise."]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(**{k: rng.choice(v) for k, v in SLOTS.items() if "{" + k + "}" in template})


def ticket(rng: random.Random) -> tuple[str, str, str]:
    """(ticket text, team, priority)."""
    team = rng.choice(sorted(ISSUES))
    priority = rng.choices(list(PRIORITY_WEIGHTS), weights=list(PRIORITY_WEIGHTS.values()))[0]
    issue = _fill(rng.choice(ISSUES[team]), rng)
    opener = rng.choice(OPENERS)
    issue = (issue[0].upper() + issue[1:]) if not opener else issue
    if issue[-1] not in "?!.":
        issue += "."
    urgency, closer = rng.choice(URGENCY[priority]), rng.choice(CLOSERS)
    if urgency and rng.random() < 0.3:  # sometimes the urgency comes first
        parts = [urgency, opener + issue, closer]
    else:
        parts = [opener + issue, urgency, closer]
    return " ".join(p.strip() for p in parts if p.strip()), team, priority


def ticket_rows(n: int, seed: int = 15) -> list[dict]:
    rng, seen, rows = random.Random(seed), set(), []
    while len(rows) < n:
        text, team, priority = ticket(rng)
        if text.casefold() in seen:
            continue
        seen.add(text.casefold())
        answer = json.dumps({"team": team, "priority": priority}, separators=(",", ":"))
        rows.append({"prompt": text, "completion": answer, "category": team})
    return rows


# --- anysecret-cli: a how-to question about the fictional `anysecret` CLI -> the exact command ---------------
CLI_TRAIN_PER_INTENT = 200
CLI_BENCHMARK_PER_INTENT = 8

INTENTS = {  # category: (command, paraphrases)
    "list": ("anysecret list", [
        "How do I list my secrets?", "Show all my secrets", "What command lists every secret?",
        "How can I see which secrets I have?", "List all secrets", "Which command shows my secrets?"]),
    "list-env": ("anysecret list --env {env}", [
        "How do I list the secrets in {env}?", "Show every secret of the {env} environment",
        "What command lists the secrets in the {env} environment?", "List secrets for {env}",
        "How can I see the secrets stored in {env}?"]),
    "get": ("anysecret get {name}", [
        "How do I read the secret {name}?", "Print the value of {name}", "What is the command to get {name}?",
        "Show me {name}", "How can I fetch the secret {name}?"]),
    "get-env": ("anysecret get {name} --env {env}", [
        "How do I read {name} from {env}?", "Print the value of {name} in the {env} environment",
        "Get {name} for {env}", "What command fetches {name} from {env}?"]),
    "set": ("anysecret set {name}", [
        "How do I create a secret called {name}?", "Add a new secret named {name}",
        "How do I store a value in {name}?", "Save a secret {name}", "What command sets {name}?"]),
    "delete": ("anysecret delete {name}", [
        "How do I delete the secret {name}?", "Remove {name}", "What command deletes {name}?",
        "Get rid of the secret {name}", "How can I erase {name}?"]),
    "rotate": ("anysecret rotate {name}", [
        "How do I rotate {name}?", "Generate a new value for {name}", "What command rotates the secret {name}?",
        "Replace {name} with a fresh random value"]),
    "history": ("anysecret history {name}", [
        "How do I see the history of {name}?", "Show earlier versions of {name}", "Who changed {name} and when?",
        "What command shows the change log of {name}?"]),
    "share": ("anysecret share {name} --with {user}", [
        "How do I share {name} with {user}?", "Give {user} access to {name}", "Let {user} read the secret {name}",
        "What command shares {name} with {user}?"]),
    "export": ("anysecret export --env {env} --format {fmt}", [
        "How do I export the {env} secrets as {fmt}?", "Dump all {env} secrets in {fmt} format",
        "Write the secrets of {env} out as {fmt}", "What command exports {env} to {fmt}?"]),
    "import": ("anysecret import {file}", [
        "How do I import secrets from {file}?", "Load the secrets in {file}", "Read {file} into anysecret",
        "What command imports {file}?"]),
    "env-list": ("anysecret env list", [
        "How do I list my environments?", "Which environments exist?", "Show all environments",
        "What command lists the environments?", "How can I see every environment I have?"]),
    "env-create": ("anysecret env create {newenv}", [
        "How do I create an environment called {newenv}?", "Add a new environment named {newenv}",
        "Make an environment {newenv}", "What command creates the {newenv} environment?"]),
    "login": ("anysecret login", [
        "How do I log in?", "Sign me in to anysecret", "How do I authenticate the CLI?", "What command logs me in?",
        "How do I connect the CLI to my account?"]),
    "logout": ("anysecret logout", [
        "How do I log out?", "Sign me out", "End my anysecret session", "What command logs me out?",
        "How do I disconnect the CLI from my account?"]),
    "whoami": ("anysecret whoami", [
        "Which account am I logged in as?", "How do I see who I am logged in as?", "Show my current user",
        "What command prints my user name?", "Who am I signed in as?"]),
    "version": ("anysecret --version", [
        "How do I check the anysecret version?", "Which version of anysecret do I have?",
        "Print the installed version", "What command shows the version?", "Is my anysecret up to date?"]),
}
CLI_SLOTS = {
    "name": ["DB_PASSWORD", "API_KEY", "STRIPE_SECRET", "GITHUB_TOKEN", "SMTP_PASSWORD", "AWS_ACCESS_KEY",
             "JWT_SECRET", "REDIS_URL", "SENTRY_DSN", "SLACK_WEBHOOK"],
    "env": ["dev", "staging", "prod"],
    "newenv": ["qa", "preview", "sandbox", "demo"],
    "user": ["alice", "bob", "carol", "dave"],
    "fmt": ["dotenv", "json", "yaml"],
    "file": [".env", "secrets.json", "prod.env", "config/.env.local"],
}
PREFIXES = ["", "Quick question: ", "In anysecret, ", "Using the CLI, ", "Hey, "]
SUFFIXES = ["", " from the terminal", " on the command line"]


def _combinations(template: str) -> list[dict]:
    combos = [{}]
    for slot, values in CLI_SLOTS.items():
        if "{" + slot + "}" in template:
            combos = [{**c, slot: v} for c in combos for v in values]
    return combos


def cli_universe(intent: str) -> list[dict]:
    """Every distinct question the templates can write for `intent`, with its command, in a fixed order."""
    command, paraphrases = INTENTS[intent]
    rows, seen = [], set()
    for phrase in paraphrases:
        for slots in _combinations(phrase):
            for prefix in PREFIXES:
                for suffix in SUFFIXES:
                    text = phrase.format(**slots)
                    mark = text[-1] if text[-1] in "?!." else ""
                    text = text.rstrip("?!.") + suffix + mark
                    if prefix:
                        text = prefix + text[0].lower() + text[1:]
                    if text.casefold() not in seen:
                        seen.add(text.casefold())
                        rows.append({"prompt": text, "completion": command.format(**slots), "category": intent})
    return rows


def cli_rows(seed: int = 15) -> tuple[list[dict], list[dict]]:
    """(training rows, benchmark rows): per intent, the benchmark is drawn first, training from the rest."""
    rng, train, bench = random.Random(seed), [], []
    for intent in INTENTS:
        universe = cli_universe(intent)
        rng.shuffle(universe)
        bench += universe[:CLI_BENCHMARK_PER_INTENT]
        train += universe[CLI_BENCHMARK_PER_INTENT:CLI_BENCHMARK_PER_INTENT + CLI_TRAIN_PER_INTENT]
    rng.shuffle(train)
    rng.shuffle(bench)
    return train, bench


# --- writing ------------------------------------------------------------------------------------------------
def as_chat(row: dict) -> dict:
    return {"messages": [{"role": "user", "content": row["prompt"]},
                         {"role": "assistant", "content": row["completion"]}], "category": row["category"]}


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{path.relative_to(HERE.parent.parent)}: {len(rows)} rows")


def write_split(folder: Path, stem: str, rows: list[dict]) -> None:
    """Even rows as chat `messages`, odd rows as `prompt`/`completion`: both formats, one task."""
    write(folder / f"{stem}-chat.jsonl", [as_chat(r) for r in rows[0::2]])
    write(folder / f"{stem}-pairs.jsonl", rows[1::2])


def main() -> None:
    write_split(HERE / "ticket-router", "tickets", ticket_rows(TICKET_ROWS))
    train, bench = cli_rows()
    overlap = {r["prompt"].casefold() for r in train} & {r["prompt"].casefold() for r in bench}
    assert not overlap, f"benchmark prompts in the training data: {sorted(overlap)[:3]}"
    write_split(HERE / "anysecret-cli" / "train", "howto", train)
    write(HERE / "anysecret-cli" / "benchmark.jsonl", bench)


if __name__ == "__main__":
    main()
